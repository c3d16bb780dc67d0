"""Redis restarted under load (real processes, the test's own redis-server).

While messages flow through both event writers, Redis dies: every process
notices (``/health/ready`` answers 503), Redis comes back on the same port,
every process reconnects by itself (``/health/ready`` 200 again) and catches
up with what it missed: each sync worker then delivers every message to its
client, in order, exactly once.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from atrium.handlers.event_writer import writer_for_room
from tests.conftest import requires_postgres
from tests.workers.support import (
    V3,
    Api,
    Deployment,
    RedisServer,
    collect_timeline,
    q,
    sync_once,
)

pytestmark = [pytest.mark.slow, requires_postgres]

MESSAGES = 30


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def deployment(tmp_path, redis):
    d = Deployment(tmp_path, "sync:2,event_writer:2", redis_url=redis.url).start()
    try:
        yield d
    finally:
        d.stop()


async def _all_ready(session: aiohttp.ClientSession, d: Deployment, code: int) -> None:
    """Wait until /health/ready answers ``code`` on every process."""
    deadline = time.monotonic() + 60
    pending = set(d.processes)
    while pending:
        assert time.monotonic() < deadline, f"/health/ready never {code} on {sorted(pending)}"
        for name in list(pending):
            async with session.get(d.url(name) + "/health/ready") as resp:
                if resp.status == code:
                    pending.discard(name)
        await asyncio.sleep(0.05)


async def _flow(d: Deployment, redis: RedisServer) -> None:
    async with aiohttp.ClientSession() as session:
        master = Api(session, d.url("master"))
        _, alice_token = await master.register("alice")
        _, bob_token = await master.register("bob")
        alice = Api(session, d.url("master"), alice_token)
        writers = ["event_writer1", "event_writer2"]
        rooms: list[str] = []
        while {writer_for_room(r, writers) for r in rooms} != set(writers):
            code, body = await alice.request("POST", f"{V3}/createRoom", {"preset": "public_chat"})
            assert code == 200, body
            rooms.append(body["room_id"])
        bob = Api(session, d.url("master"), bob_token)
        for room_id in rooms:
            code, body = await bob.request("POST", f"{V3}/join/{q(room_id)}")
            assert code == 200, body
        readers = {w: bob.at(d.url(w)) for w in d.of_app("sync")}
        since = {w: (await sync_once(api, None))["next_batch"] for w, api in readers.items()}

        sent: list[tuple[str, str]] = []

        async def sender() -> None:
            for i in range(MESSAGES):
                room_id = rooms[i % len(rooms)]
                via = alice.at(d.url(writers[i % 2]))
                # Sends to the other writer's rooms wait for replication
                # (read-your-writes), so they stall while Redis is away.
                sent.append((room_id, await via.send_text(room_id, f"m{i}")))

        sending = asyncio.ensure_future(sender())
        while len(sent) < MESSAGES // 3:
            await asyncio.sleep(0.02)
        redis.stop()
        await _all_ready(session, d, 503)
        redis.start()
        await _all_ready(session, d, 200)
        await asyncio.wait_for(sending, 120)

        for worker, api in readers.items():
            seen, _ = await collect_timeline(api, since[worker], set(rooms), MESSAGES, 60)
            for room_id in rooms:
                expected = [e for r, e in sent if r == room_id]
                assert [e for r, e in seen if r == room_id] == expected, (worker, room_id)
            assert len(seen) == MESSAGES, worker


def test_every_process_reconnects_and_catches_up_after_redis_restarts(deployment, redis):
    asyncio.run(_flow(deployment, redis))
