"""/health/live and /health/ready on one process, with real failures.

The database and Redis that go away are the test's own (a PostgreSQL and a
redis-server on free ports), never the shared ones. Ready answers 503 with
the failing check named, live keeps answering 200 (the process runs), and
ready comes back by itself once the service does.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from prometheus_client import REGISTRY
from twisted.internet import reactor, task, threads

from atrium.app.status import Target, probe, render
from tests.replication.support import wait_until
from tests.support.client import JsonClient
from tests.support.postgres_server import PostgresServer
from tests.support.server import running_homeserver
from tests.workers.support import RedisServer


async def _ready(client: JsonClient) -> tuple[int, dict]:
    resp = await client.get("/health/ready", token=False)
    return resp.code, resp.json


async def _wait_ready_code(client: JsonClient, code: int, timeout: float = 30.0) -> dict:
    waited = 0.0
    while True:
        got, last = await _ready(client)
        if got == code:
            return last
        await task.deferLater(reactor, 0.1, lambda: None)
        waited += 0.1
        assert waited < timeout, f"/health/ready never answered {code}: {last}"


@pytest_twisted.ensureDeferred
async def test_embedded_process_is_live_and_ready_with_every_check_named(server):
    hs, anon = server
    assert (await anon.get("/health/live", token=False)).json["status"] == "ok"
    code, body = await _ready(anon)
    assert code == 200 and body["status"] == "ready" and body["failing"] == []
    # The embedded default has no Redis link: only the database and streams.
    assert set(body["checks"]) == {"database", "streams"}
    assert body["app"] == "master" and body["instance"] == "master"
    events = [s for s in body["streams"] if s["stream"] == "events"]
    assert events and events[0]["writer"] == "master" and events[0]["lag"] == 0


@pytest.fixture
def own_postgres():
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest_twisted.ensureDeferred
async def test_ready_fails_while_the_database_is_unreachable(tmp_path, own_postgres):
    async with running_homeserver(tmp_path, "postgres", own_postgres.url) as (hs, anon):
        code, body = await _ready(anon)
        assert code == 200, body
        own_postgres.stop()
        code, body = await _ready(anon)
        assert code == 503, body
        assert body["status"] == "not ready" and body["failing"] == ["database"]
        assert body["checks"]["database"]["ok"] is False and body["checks"]["database"]["error"]
        assert (await anon.get("/health/live", token=False)).code == 200
        # What `atrium status` makes of it (a blocking client: off the reactor thread).
        seen = await threads.deferToThread(probe, Target("master", anon.base_url), 5.0)
        assert (seen.state, seen.error) == ("NOT READY", "database")
        assert "NOT READY" in render([seen]).splitlines()[1]
        own_postgres.start()
        body = await _wait_ready_code(anon, 200)
        assert body["checks"]["database"]["ok"] is True


def _connected_gauge() -> float | None:
    return REGISTRY.get_sample_value("atrium_replication_connected", {"transport": "redis"})


@pytest_twisted.ensureDeferred
async def test_ready_fails_while_redis_is_lost(tmp_path):
    redis = RedisServer(tmp_path / "redis.log")
    redis.start()
    try:
        async with running_homeserver(
            tmp_path, redis={"url": redis.url, "channel": "atrium-test-health"}
        ) as (hs, anon):
            code, body = await _ready(anon)
            assert code == 200 and body["checks"]["redis"] == {"ok": True}, body
            assert _connected_gauge() == 1
            redis.stop()
            body = await _wait_ready_code(anon, 503)
            assert body["failing"] == ["redis"], body
            assert _connected_gauge() == 0
            redis.start()
            await _wait_ready_code(anon, 200)
            await wait_until(lambda: _connected_gauge() == 1, 10, "the connected gauge")
    finally:
        redis.stop()
