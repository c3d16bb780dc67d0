"""/health/ready on a worker whose stream processing falls behind.

A master and a sync worker replicate over an in-process bus; the worker's
processing of events rows is held back (its events stream's ``effects``
waits on a gate, and the worker applies commands one at a time, so
everything after it queues). The master writes more events than
``health.max_stream_lag``: the worker hears each POSITION (the writer's
advertised position) but has not applied it, so its /health/ready answers 503
naming the lagging stream; once the gate opens it catches up and is ready.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.conftest import POSTGRES_URL, requires_postgres
from tests.support.client import q
from tests.workers.inprocess import caught_up, client_for, in_process_deployment

pytestmark = requires_postgres

V3 = "/_matrix/client/v3"
MAX_LAG = 3


async def _ready_code(client: Any, code: int, timeout: float = 20.0) -> dict:
    waited = 0.0
    while True:
        resp = await client.get("/health/ready", token=False)
        if resp.code == code:
            return resp.json
        await task.deferLater(reactor, 0.05, lambda: None)
        waited += 0.05
        assert waited < timeout, f"/health/ready never {code}: {resp.json}"


@pytest_twisted.ensureDeferred
async def test_worker_is_not_ready_while_a_followed_stream_lags(tmp_path):
    overrides = {"health": {"max_stream_lag": MAX_LAG}}
    async with in_process_deployment(tmp_path, POSTGRES_URL, [("sync", 1)], overrides) as (
        servers,
        _bus,
    ):
        master, sync1 = servers["master"], servers["sync1"]
        alice = await client_for(master).register("alice")
        room_id = (await alice.post(f"{V3}/createRoom", {})).json["room_id"]
        await caught_up(servers)
        worker = client_for(sync1)
        body = await _ready_code(worker, 200)
        assert body["app"] == "sync" and body["checks"]["replication"]["ok"]

        gate: defer.Deferred[None] = defer.Deferred()
        stream = sync1.streams["events"]
        original = stream.effects

        async def held_back(rows: Any) -> Any:
            await gate
            return await original(rows)

        stream.effects = held_back  # type: ignore[method-assign]
        try:
            for i in range(MAX_LAG + 2):
                sent = await alice.put(
                    f"{V3}/rooms/{q(room_id)}/send/m.room.message/t{i}",
                    {"msgtype": "m.text", "body": str(i)},
                )
                assert sent.code == 200, sent
            body = await _ready_code(worker, 503)
            assert body["failing"] == ["streams"], body
            assert "events/master" in body["checks"]["streams"]["error"]
            (events,) = [s for s in body["streams"] if s["stream"] == "events"]
            assert events["lag"] > MAX_LAG and not events["ok"]
            assert events["writer_position"] == master.current_token().events.stream
            # The writer itself is never behind its own stream.
            assert (await client_for(master).get("/health/ready", token=False)).code == 200
        finally:
            gate.callback(None)
        body = await _ready_code(worker, 200)
        (events,) = [s for s in body["streams"] if s["stream"] == "events"]
        assert events["lag"] == 0
