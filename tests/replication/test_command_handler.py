"""Replication between processes on an InProcessBus, with the caches stream on a real
database: ordering per stream, batches, gaps, catch-up on start and own-row filtering."""

from __future__ import annotations

import pytest_twisted
from prometheus_client import REGISTRY
from twisted.internet import reactor, task

from atrium.replication.bus import InProcessBus
from atrium.replication.commands import UserSyncCommand, parse_lines
from atrium.replication.streams.events import EventsStreamRow
from tests.replication.support import make_process, settle


def _gaps(stream: str) -> float:
    return (
        REGISTRY.get_sample_value("atrium_replication_gaps_fetched_total", {"stream": stream})
        or 0.0
    )


def _member_row(user: str, room: str = "!r:hs") -> EventsStreamRow:
    return EventsStreamRow(f"$join-{user}", room, "m.room.member", user, user, "join", None, False)


@pytest_twisted.ensureDeferred
async def test_caches_rows_reach_every_other_process_once_and_in_order(db):
    bus = InProcessBus()
    writer = await make_process("w1", db, bus.connect())
    readers = [await make_process(f"r{i}", db, bus.connect()) for i in range(2)]
    everyone = [writer, *readers]
    for p in everyone:
        p.record_cache("get_thing")
        await p.start()
    await settle(*everyone)

    for i in range(1, 11):
        writer.invalidator.invalidate("get_thing", [(i,)])
        if i % 3 == 0:
            # Some invalidations land in separate reactor turns (separate flushes).
            await task.deferLater(reactor, 0, lambda: None)
    writer.invalidator.invalidate("get_thing", [(11,), (12,)])
    await settle(*everyone)

    expected = [(i,) for i in range(1, 13)]
    for reader in readers:
        assert reader.invalidated("get_thing") == expected
        assert reader.data_handler.get_position("caches", "w1") == 11
    # The writer invalidated locally once per call; hearing its own rows does nothing.
    assert writer.invalidated("get_thing") == expected
    # Each call is one row in the database, with all its keys.
    rows = await db.execute(
        "t", "SELECT stream_id, cache_keys FROM cache_invalidation_stream ORDER BY stream_id"
    )
    assert len(rows) == 11 and rows[-1] == (11, "[[11],[12]]")


@pytest_twisted.ensureDeferred
async def test_a_batch_sharing_one_token_is_invalidated_entirely_before_one_notify(db):
    """Three rows at token 7 go out as RDATA batch, batch, 7 then POSITION; the reader
    invalidates for all three before it advances to 7 and wakes everyone at once."""
    bus = InProcessBus()
    messages: list[str] = []
    bus.observers.append(messages.append)
    writer = await make_process("w1", db, bus.connect(), written=("caches", "events"))
    reader = await make_process("r1", db, bus.connect())
    reader.record_cache("get_rooms_for_user_with_stream_ordering")
    for p in (writer, reader):
        await p.start()
    await settle(writer, reader)

    rows = [_member_row("@a:hs"), _member_row("@b:hs"), _member_row("@c:hs")]
    await writer.publisher.publish("events", 7, rows)
    await settle(writer, reader)

    sent = [c.to_line().split(" ", 4)[:4] for c in parse_lines(messages[-1])]
    assert sent == [
        ["RDATA", "events", "w1", "batch"],
        ["RDATA", "events", "w1", "batch"],
        ["RDATA", "events", "w1", "7"],
        ["POSITION", "events", "w1", "0"],
    ]
    kinds = [e[0] for e in reader.log]
    assert kinds.count("notify") == 1
    notify = reader.log[kinds.index("notify")]
    assert kinds.index("notify") > max(
        i for i, e in enumerate(reader.log) if e[1] == "get_rooms_for_user_with_stream_ordering"
    )
    assert reader.invalidated("get_rooms_for_user_with_stream_ordering") == [
        ("@a:hs",),
        ("@b:hs",),
        ("@c:hs",),
    ]
    assert notify[2] == 7 and notify[3] == {"@a:hs", "@b:hs", "@c:hs"}
    # Position advanced before the wake-up.
    assert notify[5] == {"w1": 7}


@pytest_twisted.ensureDeferred
async def test_position_ahead_of_what_was_applied_fetches_the_missing_rows_first(db):
    bus = InProcessBus()
    writer = await make_process("w1", db, bus.connect())
    reader = await make_process("r1", db, bus.connect())
    reader.record_cache("get_thing")
    for p in (writer, reader):
        await p.start()
    writer.invalidator.invalidate("get_thing", [(1,)])
    await settle(writer, reader)
    assert reader.invalidated("get_thing") == [(1,)]

    # The reader's link drops: rows 2..5 never reach it.
    reader.connection.simulate_disconnect()
    for i in range(2, 6):
        writer.invalidator.invalidate("get_thing", [(i,)])
        await settle(writer)
    reader.connection.simulate_reconnect(notify=False)
    gaps_before = _gaps("caches")

    # Row 6 arrives with POSITION 5 -> 6: the reader is at 1, so it fetches (1, 5] first.
    writer.invalidator.invalidate("get_thing", [(6,)])
    await settle(writer, reader)
    assert reader.invalidated("get_thing") == [(i,) for i in range(1, 7)]
    assert reader.data_handler.get_position("caches", "w1") == 6
    assert _gaps("caches") == gaps_before + 1


@pytest_twisted.ensureDeferred
async def test_start_loads_stored_positions_then_replicate_catches_up_before_live_rows(db):
    """A starting process begins at the positions persisted in the database (rows
    before them need no applying: its caches are empty), subscribes, and fetches
    what was written in between before the live rows queued meanwhile."""
    bus = InProcessBus()
    writer = await make_process("w1", db, bus.connect())
    await writer.start()
    for i in range(1, 11):
        writer.invalidator.invalidate("get_thing", [(i,)])
        await settle(writer)

    # Small pages so the catch-up takes several database round trips.
    reader = await make_process("r1", db, bus.connect(), fetch_limit=4)
    reader.record_cache("get_thing")
    await reader.handler.load_stored_positions()
    assert reader.data_handler.get_position("caches", "w1") == 10
    # Written after the reader read the positions but before it subscribed.
    for i in range(11, 26):
        writer.invalidator.invalidate("get_thing", [(i,)])
        await settle(writer)
    await reader.connection.start()
    # Live rows while the reader is still catching up.
    for i in range(26, 36):
        writer.invalidator.invalidate("get_thing", [(i,)])
        await task.deferLater(reactor, 0, lambda: None)
    await settle(writer, reader)

    assert reader.invalidated("get_thing") == [(i,) for i in range(11, 36)]
    assert reader.data_handler.get_position("caches", "w1") == 35


@pytest_twisted.ensureDeferred
async def test_a_writer_first_heard_after_start_is_replayed_from_its_first_row(db):
    """Positions are loaded for every writer with rows at start-up; a writer with
    none then has written everything since, so all its rows are applied even if
    the first thing heard from it is a later POSITION."""
    bus = InProcessBus()
    reader = await make_process("r1", db, bus.connect())
    reader.record_cache("get_thing")
    await reader.start()
    writer = await make_process("w1", db, bus.connect())
    # The writer's first rows are never heard (its link is not up yet).
    for i in range(1, 4):
        writer.invalidator.invalidate("get_thing", [(i,)])
        await settle(writer)
    await writer.start()
    await settle(writer, reader)
    assert reader.invalidated("get_thing") == [(1,), (2,), (3,)]


@pytest_twisted.ensureDeferred
async def test_reconnect_runs_replicate_and_catches_up(db):
    bus = InProcessBus()
    writer = await make_process("w1", db, bus.connect())
    reader = await make_process("r1", db, bus.connect())
    reader.record_cache("get_thing")
    for p in (writer, reader):
        await p.start()
    await settle(writer, reader)
    reader.connection.simulate_disconnect()
    for i in range(1, 4):
        writer.invalidator.invalidate("get_thing", [(i,)])
    await settle(writer, reader)
    assert reader.invalidated("get_thing") == []
    # No new rows are written: only the reconnect's REPLICATE reveals the gap.
    reader.connection.simulate_reconnect()
    await settle(writer, reader)
    assert reader.invalidated("get_thing") == [(1,), (2,), (3,)]


@pytest_twisted.ensureDeferred
async def test_commands_from_a_process_itself_are_not_applied_or_dispatched(db):
    bus = InProcessBus()
    a = await make_process("a", db, bus.connect())
    b = await make_process("b", db, bus.connect())
    heard: dict[str, list[str]] = {"a": [], "b": []}
    for p in (a, b):
        p.handler.add_listener(
            "USER_SYNC", lambda c, name=p.instance_name: heard[name].append(c.user_id)
        )
        await p.start()
    a.handler.send_command(UserSyncCommand("a", "@u:hs", True, 1))
    await settle(a, b)
    assert heard == {"a": [], "b": ["@u:hs"]}


@pytest_twisted.ensureDeferred
async def test_malformed_lines_on_the_bus_are_dropped_and_the_rest_still_applies(db):
    bus = InProcessBus()
    reader = await make_process("r1", db, bus.connect())
    reader.record_cache("get_thing")
    await reader.start()
    bus._publish(
        "\n".join(
            [
                "NONSENSE 1 2 3",
                'RDATA caches w9 1 ["get_thing",[["x"]],5]',
                'RDATA caches w9 2 ["get_thing","not a key list",5]',
                'RDATA caches w9 3 ["get_thing",[["y"]],5]',
                "POSITION caches w9 0 3",
            ]
        )
    )
    await settle(reader)
    assert reader.invalidated("get_thing") == [("x",), ("y",)]
    assert reader.data_handler.get_position("caches", "w9") == 3


@pytest_twisted.ensureDeferred
async def test_start_up_waits_for_each_writer_to_answer_replicate(db):
    bus = InProcessBus()
    reader = await make_process("r1", db, bus.connect())
    await reader.start()
    # Nobody writes "caches" as w1 yet: the wait gives up (bounded), saying so.
    assert not await reader.handler.wait_for_writers({"caches": ["w1"]}, timeout=0.2)
    writer = await make_process("w1", db, bus.connect())
    await writer.start()
    # The writer's own REPLICATE makes it announce its positions to everyone.
    assert await reader.handler.wait_for_writers({"caches": ["w1"]}, timeout=5)


@pytest_twisted.ensureDeferred
async def test_rows_published_out_of_order_are_still_applied_without_moving_back(db):
    """A writer whose concurrent writes finish out of order publishes token 6 before 5:
    the other processes still apply both (a lost invalidation would leave a stale
    cache), and their position stays at 6."""
    bus = InProcessBus()
    writer = await make_process("w1", db, bus.connect(), written=("caches", "events"))
    reader = await make_process("r1", db, bus.connect())
    reader.record_cache("get_rooms_for_user_with_stream_ordering")
    for p in (writer, reader):
        await p.start()
    await settle(writer, reader)
    await writer.publisher.publish("events", 6, [_member_row("@b:hs")])
    await writer.publisher.publish("events", 5, [_member_row("@a:hs")])
    await settle(writer, reader)
    assert reader.invalidated("get_rooms_for_user_with_stream_ordering") == [("@b:hs",), ("@a:hs",)]
    assert reader.data_handler.get_position("events", "w1") == 6
    assert [n[3] for n in reader.notifications("events")] == [{"@b:hs"}, {"@a:hs"}]
