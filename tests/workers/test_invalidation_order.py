"""The seeds' invariant across processes (real master + sync worker, PostgreSQL + Redis).

On every process, applying an events-stream row invalidates the caches it
names (here ``get_rooms_for_user_with_stream_ordering``) BEFORE the notifier
wakes /sync long-polls. bob's sync worker has his (empty) room list cached
and a long-poll waiting when he joins a room through the master: the woken
/sync must include the room. Were the notifier woken first, the long-poll
would compute from the stale room list, miss the room, and — the join being
behind its next_batch by then — never show it.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from tests.conftest import requires_postgres, requires_redis
from tests.workers.support import V3, Api, Deployment, q, sync_once

pytestmark = [pytest.mark.slow, requires_postgres, requires_redis]

# No presence updates: they would wake the long-poll for other reasons.
NO_PRESENCE = "&set_presence=offline"


@pytest.fixture
def deployment(tmp_path):
    d = Deployment(tmp_path, "sync:1").start()
    try:
        yield d
    finally:
        d.stop()


async def _flow(d: Deployment) -> None:
    async with aiohttp.ClientSession() as session:
        master = Api(session, d.url("master"))
        _, alice_token = await master.register("alice")
        _, bob_token = await master.register("bob")
        alice = Api(session, d.url("master"), alice_token)
        bob_master = Api(session, d.url("master"), bob_token)
        bob_sync = Api(session, d.url("sync1"), bob_token)
        filter_json = q(json.dumps({"room": {"timeline": {"limit": 50}}}))

        # An initial sync on the worker caches bob's (empty) list of rooms there.
        since = (await sync_once(bob_sync, None))["next_batch"]
        code, body = await alice.request("POST", f"{V3}/createRoom", {"preset": "public_chat"})
        assert code == 200, body
        room_id = body["room_id"]

        async def long_poll(token: str) -> dict:
            code, body = await bob_sync.request(
                "GET",
                f"{V3}/sync?timeout=5000&since={q(token)}&filter={filter_json}{NO_PRESENCE}",
            )
            assert code == 200, body
            return body

        # Catch up with the room's creation first, so the next poll waits.
        while True:
            body = await long_poll(since)
            since = body["next_batch"]
            if not body.get("rooms"):
                break
        polling = asyncio.ensure_future(long_poll(since))
        # Join only once the long-poll is parked in the worker's notifier.
        deadline = time.monotonic() + 10
        while await d.metric(session, "sync1", "atrium_notifier_listeners") < 1:
            assert time.monotonic() < deadline, "the long-poll never started waiting"
            await asyncio.sleep(0.01)
        code, body = await bob_master.request("POST", f"{V3}/join/{q(room_id)}")
        assert code == 200, body

        # Whatever woke it, the room shows up within a few polls.
        deadline = time.monotonic() + 15
        body = await polling
        while room_id not in body.get("rooms", {}).get("join", {}):
            assert time.monotonic() < deadline, "the joined room never reached /sync"
            body = await long_poll(body["next_batch"])
        timeline = body["rooms"]["join"][room_id]["timeline"]["events"]
        assert any(
            e["type"] == "m.room.member" and e["state_key"].startswith("@bob:") for e in timeline
        )


def test_long_poll_on_a_sync_worker_sees_a_room_joined_through_the_master(deployment):
    asyncio.run(_flow(deployment))
