"""Sync workers dying, as real processes on PostgreSQL + Redis.

- kill -9 a sync worker while messages flow, restart it: its client carries
  on with its last token and gets every message, in order, exactly once (the
  worker catches up from its stored positions).
- The master notices the killed worker by its missing PINGs and clears its
  syncing users (presence offline); a worker stopped cleanly clears its
  users itself with CLEAR_USER_SYNC, without waiting for that timeout.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from atrium.handlers.event_writer import writer_for_room
from tests.conftest import requires_postgres, requires_redis
from tests.workers.support import V3, Api, Deployment, collect_timeline, q, sync_once

pytestmark = [pytest.mark.slow, requires_postgres, requires_redis]

MESSAGES = 40


@pytest.fixture
def deployment(tmp_path):
    d = Deployment(tmp_path, "sync:2,event_writer:2").start()
    try:
        yield d
    finally:
        d.stop()


async def _presence(api: Api, user_id: str) -> str:
    code, body = await api.request("GET", f"{V3}/presence/{q(user_id)}/status")
    assert code == 200, body
    return body["presence"]


async def _wait_presence(api: Api, user_id: str, state: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while (current := await _presence(api, user_id)) != state:
        assert time.monotonic() < deadline, f"{user_id} still {current}, wanted {state}"
        await asyncio.sleep(0.1)


async def _flow(d: Deployment) -> None:
    async with aiohttp.ClientSession() as session:
        master = Api(session, d.url("master"))
        alice_id, alice_token = await master.register("alice")
        bob_id, bob_token = await master.register("bob")
        carol_id, carol_token = await master.register("carol")
        alice = Api(session, d.url("master"), alice_token)
        rooms: list[str] = []
        writers = ["event_writer1", "event_writer2"]
        while {writer_for_room(r, writers) for r in rooms} != set(writers):
            code, body = await alice.request("POST", f"{V3}/createRoom", {"preset": "public_chat"})
            assert code == 200, body
            rooms.append(body["room_id"])
        for token in (bob_token, carol_token):
            for room_id in rooms:
                code, body = await Api(session, d.url("master"), token).request(
                    "POST", f"{V3}/join/{q(room_id)}"
                )
                assert code == 200, body

        bob_on_sync1 = Api(session, d.url("sync1"), bob_token)
        carol_on_sync2 = Api(session, d.url("sync2"), carol_token)
        since = (await sync_once(bob_on_sync1, None))["next_batch"]
        await sync_once(carol_on_sync2, None)
        # Syncing made them online (the master heard USER_SYNC).
        await _wait_presence(alice, bob_id, "online")
        await _wait_presence(alice, carol_id, "online")

        # Load: alice sends through both event writers while bob syncs on sync1.
        sent: list[tuple[str, str]] = []

        async def sender() -> None:
            for i in range(MESSAGES):
                room_id = rooms[i % len(rooms)]
                via = Api(session, d.url(writers[i % 2]), alice_token)
                sent.append((room_id, await via.send_text(room_id, f"m{i}")))

        sending = asyncio.ensure_future(sender())
        collecting = asyncio.ensure_future(
            collect_timeline(bob_on_sync1, since, set(rooms), MESSAGES, 90, tolerate_errors=True)
        )
        while len(sent) < MESSAGES // 3:
            await asyncio.sleep(0.02)
        d.processes["sync1"].kill()
        # Dead worker detection: no PINGs from sync1, so the master clears bob.
        await _wait_presence(alice, bob_id, "offline")
        await asyncio.to_thread(d.restart, "sync1")
        await sending
        seen, _ = await collecting
        for room_id in rooms:
            expected = [e for r, e in sent if r == room_id]
            assert [e for r, e in seen if r == room_id] == expected, room_id
        assert len(seen) == MESSAGES
        assert "taking it for dead" in d.log("master")

        # A clean stop sends CLEAR_USER_SYNC: carol (who just synced, so sync2
        # still reports her) goes offline without waiting for the timeout.
        await sync_once(carol_on_sync2, None)
        await _wait_presence(alice, carol_id, "online")
        await asyncio.to_thread(d.processes["sync2"].stop)
        await _wait_presence(alice, carol_id, "offline")
        master_log = d.log("master")
        assert "Clearing 1 syncing users of sync2" in master_log
        assert "No word from sync2" not in master_log


def test_killed_sync_worker_restarts_and_catches_up_and_its_users_are_cleared(deployment):
    asyncio.run(_flow(deployment))
