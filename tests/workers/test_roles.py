"""Each worker type, as a real process, serves exactly its route groups.

master: everything. sync: /sync. event_writer: event writes (client_write).
generic: client reads and E2EE key reads. federation_reader: the federation
APIs (404 M_UNRECOGNIZED until federation lands). Non-event writes whose
streams the master writes (typing, account data, to-device...) are the
master's alone. Every process answers /health and serves the replication
endpoints, which refuse requests without the deployment's secret (403).
"""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest
import yaml

from tests.conftest import requires_postgres, requires_redis
from tests.workers.support import V3, Api, Deployment, q

pytestmark = [pytest.mark.slow, requires_postgres, requires_redis]

PROCESSES = ("master", "sync1", "event_writer1", "generic1", "federation_reader1")


@pytest.fixture
def deployment(tmp_path):
    d = Deployment(tmp_path, "sync:1,event_writer:1,federation_reader:1,generic:1").start()
    try:
        yield d
    finally:
        d.stop()


async def _flow(d: Deployment) -> None:
    secret = yaml.safe_load(d.config_path.read_text())["worker_replication_secret"]
    async with aiohttp.ClientSession() as session:
        master = Api(session, d.url("master"))
        user_id, token = await master.register("alice")
        alice = Api(session, d.url("master"), token)
        code, body = await alice.request("POST", f"{V3}/createRoom", {})
        assert code == 200, body
        room_id = body["room_id"]

        def txn() -> str:
            return uuid.uuid4().hex

        # (description, method, path, body, processes that serve it)
        checks = [
            ("client_read", "GET", "/_matrix/client/versions", None, {"master", "generic1"}),
            ("client_read", "GET", f"{V3}/rooms/{q(room_id)}/state", None, {"master", "generic1"}),
            ("sync", "GET", f"{V3}/sync?timeout=0", None, {"master", "sync1"}),
            (
                "client_write",
                "PUT",
                f"{V3}/rooms/{q(room_id)}/send/m.room.message/{{txn}}",
                {"msgtype": "m.text", "body": "hi"},
                {"master", "event_writer1"},
            ),
            (
                "client_master: typing",
                "PUT",
                f"{V3}/rooms/{q(room_id)}/typing/{q(user_id)}",
                {"typing": False},
                {"master"},
            ),
            (
                "client_master: account data",
                "PUT",
                f"{V3}/user/{q(user_id)}/account_data/org.example",
                {"a": 1},
                {"master"},
            ),
            (
                "client_master: to-device",
                "PUT",
                f"{V3}/sendToDevice/org.example/{{txn}}",
                {"messages": {}},
                {"master"},
            ),
            (
                "client_master: filter",
                "POST",
                f"{V3}/user/{q(user_id)}/filter",
                {"room": {"timeline": {"limit": 5}}},
                {"master"},
            ),
            ("keys", "POST", f"{V3}/keys/query", {"device_keys": {}}, {"master", "generic1"}),
            ("health", "GET", "/health", None, set(PROCESSES)),
        ]
        for what, method, path, body, served_by in checks:
            for name in PROCESSES:
                api = alice.at(d.url(name))
                code, answer = await api.request(method, path.replace("{txn}", txn()), body)
                if name in served_by:
                    assert code == 200, (what, name, code, answer)
                else:
                    assert code == 404, (what, name, code, answer)
                    assert answer["errcode"] == "M_UNRECOGNIZED", (what, name, answer)

        # Federation endpoints: not on client-facing workers; the federation
        # reader answers them (404 M_UNRECOGNIZED while federation is absent).
        for name in PROCESSES:
            code, answer = await Api(session, d.url(name)).request(
                "GET", "/_matrix/federation/v1/version"
            )
            if name in ("master", "federation_reader1") and code == 200:
                continue
            assert code == 404 and answer["errcode"] == "M_UNRECOGNIZED", (name, code, answer)

        # Replication endpoints: 403 without (or with a wrong) secret, on every process.
        updates = "/_atrium/replication/streams/events/updates?instance=master&from=0&to=1"
        for name in PROCESSES:
            for secret_sent in (None, "not-the-secret-at-all"):
                code, answer = await Api(session, d.url(name), secret_sent).request("GET", updates)
                assert code == 403, (name, secret_sent, answer)
                assert answer["errcode"] == "M_FORBIDDEN"
            code, answer = await Api(session, d.url(name), secret).request("GET", updates)
            assert code == 200 and "rows" in answer, (name, answer)
            code, answer = await Api(session, d.url(name)).request(
                "POST", "/_atrium/replication/send_events/t1", {"events": []}
            )
            # send_events exists on the events writer only; it checks the secret first.
            assert code == (403 if name == "event_writer1" else 404), (name, answer)


def test_each_worker_type_serves_exactly_its_groups(deployment):
    asyncio.run(_flow(deployment))
