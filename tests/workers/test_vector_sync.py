"""/sync on a sync worker with two events writers: exact per-writer ranges.

Several HomeServers in one test process on an InProcessBus and a real
PostgreSQL database (master, event_writer1, event_writer2, sync1):

- with a vector ``since`` whose writers are at different positions, a
  membership event of the writer that was ahead is not "new" again: the
  room is not re-sent as newly joined (no second copy of its timeline);
- a ``since`` token from a process further along than this sync worker
  (the client's previous /sync went elsewhere) waits for this worker to
  catch up instead of failing, and nothing is sent twice.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer

from atrium.handlers.event_writer import writer_for_room
from atrium.sync.filtering import Filter
from atrium.sync.token import RoomStreamToken, StreamToken
from tests.conftest import POSTGRES_URL, requires_postgres
from tests.replication.support import wait_until
from tests.support.client import q
from tests.workers.inprocess import caught_up, client_for, in_process_deployment

pytestmark = requires_postgres

V3 = "/_matrix/client/v3"
WRITERS = ["event_writer1", "event_writer2"]
FULL = Filter.from_json({"room": {"timeline": {"limit": 100}}})


async def _room_on(alice, writer: str) -> str:
    while True:
        created = await alice.post(f"{V3}/createRoom", {"preset": "public_chat"})
        assert created.code == 200, created
        room_id = created.json["room_id"]
        if writer_for_room(room_id, WRITERS) == writer:
            return room_id


async def _send(client, room_id: str, body: str) -> str:
    sent = await client.put(
        f"{V3}/rooms/{q(room_id)}/send/m.room.message/{body}", {"msgtype": "m.text", "body": body}
    )
    assert sent.code == 200, sent
    return sent.json["event_id"]


async def _ordering(hs, event_id: str) -> int:
    event = await hs.stores.events.get_event(event_id)
    return event.internal_metadata.stream_ordering


@pytest_twisted.ensureDeferred
async def test_a_join_covered_by_its_writers_position_is_not_new_again(tmp_path):
    workers = [("event_writer", 2), ("sync", 1)]
    async with in_process_deployment(tmp_path, POSTGRES_URL, workers) as (servers, _bus):
        master, sync1 = servers["master"], servers["sync1"]
        anon = client_for(master)
        alice = await anon.register("alice")
        bob = await anon.register("bob")
        room_a = await _room_on(alice, "event_writer1")
        room_b = await _room_on(alice, "event_writer2")
        # Orderings come from one sequence: a1 < bob's join of B < a2.
        a1 = await _send(alice, room_a, "a1")
        assert (await bob.post(f"{V3}/join/{q(room_b)}")).code == 200
        await caught_up(servers)
        current = sync1.current_token()
        joined = await sync1.stores.members.get_rooms_for_user_with_stream_ordering(bob.user_id)
        join_so = dict(joined)[room_b]
        a1_so = await _ordering(sync1, a1)
        assert a1_so < join_so
        # The client saw writer 1 up to a1 and writer 2 up to (past) the join.
        since = current.copy_and_replace(
            "events",
            RoomStreamToken(a1_so, {"event_writer2": current.events.position_of("event_writer2")}),
        )
        b1 = await _send(alice, room_b, "b1")
        await caught_up(servers)
        body = await sync1.sync_handler.wait_for_sync(
            bob.user_id, bob.device_id, since=since, timeout_ms=0, sync_filter=FULL
        )
        entry = body["rooms"]["join"][room_b]
        timeline = [e["event_id"] for e in entry["timeline"]["events"]]
        # Only what is new for writer 2: b1. Not the join again, no full state.
        assert timeline == [b1]
        assert entry["state"]["events"] == []
        assert room_a not in body["rooms"].get("join", {})


@pytest_twisted.ensureDeferred
async def test_a_since_token_ahead_of_the_sync_worker_waits_for_it(tmp_path):
    workers = [("event_writer", 2), ("sync", 2)]
    async with in_process_deployment(tmp_path, POSTGRES_URL, workers) as (servers, _bus):
        master, sync1, sync2 = servers["master"], servers["sync1"], servers["sync2"]
        anon = client_for(master)
        alice = await anon.register("alice")
        room_a = await _room_on(alice, "event_writer1")
        room_b = await _room_on(alice, "event_writer2")
        await caught_up(servers)
        start = await client_for(sync2, alice.access_token).get(f"{V3}/sync")
        assert start.code == 200

        # sync1 stops hearing the bus: it falls behind.
        sync1.replication.connection.simulate_disconnect()
        sent = [await _send(alice, room_a, "a1"), await _send(alice, room_b, "b1")]
        await caught_up({k: v for k, v in servers.items() if k != "sync1"})
        on_sync2 = await client_for(sync2, alice.access_token).get(
            f"{V3}/sync", query={"since": start.json["next_batch"], "timeout": 0}
        )
        assert on_sync2.code == 200
        ahead = on_sync2.json["next_batch"]
        assert not sync1.current_token().covers(StreamToken.parse(ahead))

        # The client's next /sync goes to sync1: it waits instead of a 400...
        pending = defer.ensureDeferred(
            client_for(sync1, alice.access_token).get(
                f"{V3}/sync", query={"since": ahead, "timeout": 0}
            )
        )
        await wait_until(lambda: sync1.data_handler._waiters, what="sync1 to wait for the token")
        assert not pending.called
        # ...until sync1 is back on the bus and has caught up.
        sync1.replication.connection.simulate_reconnect()
        answer = await pending
        assert answer.code == 200, answer
        # Nothing sync2 already delivered comes again.
        for room in answer.json.get("rooms", {}).get("join", {}).values():
            assert not set(e["event_id"] for e in room["timeline"]["events"]) & set(sent)
        assert StreamToken.parse(answer.json["next_batch"]).covers(StreamToken.parse(ahead))


@pytest_twisted.ensureDeferred
async def test_an_idle_writer_keeps_up_so_tokens_stay_plain(tmp_path):
    """Only event_writer1's rooms get messages; event_writer2 moves its position
    up by itself, so the sync worker's token has no writer ahead of its minimum."""
    workers = [("event_writer", 2), ("sync", 1)]
    async with in_process_deployment(tmp_path, POSTGRES_URL, workers) as (servers, _bus):
        anon = client_for(servers["master"])
        alice = await anon.register("alice")
        room_a = await _room_on(alice, "event_writer1")
        for i in range(3):
            await _send(alice, room_a, f"m{i}")
        busy = servers["event_writer1"].stores.events.get_current_events_token()
        sync1 = servers["sync1"]
        await wait_until(
            lambda: sync1.data_handler.get_position("events", "event_writer2") >= busy,
            what="the idle writer's position to move up",
        )
        assert sync1.current_token().events.stream >= busy


@pytest_twisted.ensureDeferred
async def test_an_idle_position_never_overtakes_an_allocation_in_flight(tmp_path):
    from atrium.storage.id_generators import MultiWriterIdGenerator
    from tests.support.db import make_database

    async with make_database("postgres", tmp_path, POSTGRES_URL) as db:
        gen = await MultiWriterIdGenerator.create(
            db, "events_stream_seq", "events", "w1", "events", "stream_ordering"
        )
        other = await MultiWriterIdGenerator.create(
            db, "events_stream_seq", "events", "w2", "events", "stream_ordering"
        )
        async with other.allocate(3) as ids:
            pass
        # w1 idle: it moves past what w2 allocated.
        assert await gen.advance_idle() == ids[-1]
        async with gen.allocate(1) as mine:
            # Its own id is in flight: no move, the position stays below it.
            assert await gen.advance_idle() is None
            assert gen.get_current_token() < mine[0]
        assert gen.get_current_token() == mine[0]
