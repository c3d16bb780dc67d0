"""StreamStore: timeline rows by stream range, batched state and summaries."""

from __future__ import annotations

import pytest_twisted

from atrium.events.room_versions import V10
from atrium.storage.stores.stream import StreamStore
from tests.storage.harness import StatementCounter, StorageHarness
from tests.support.events import RoomBuilder, standard_room

BOB = "@bob:example.org"
CAROL = "@carol:example.org"
DAVE = "@dave:example.org"


def so(event) -> int:
    return event.internal_metadata.stream_ordering


async def two_rooms(h: StorageHarness) -> tuple[RoomBuilder, RoomBuilder]:
    first = standard_room(V10, members=[BOB])
    second = RoomBuilder(V10, room_id="!second:example.org")
    second.create()
    second.member(second.creator, "join")
    await h.persist(first.events.values())
    await h.persist(second.events.values())
    for i in range(4):
        await h.persist([first.send("m.room.message", BOB, {"body": f"a{i}"})])
        await h.persist([second.send("m.room.message", second.creator, {"body": f"b{i}"})])
    return first, second


@pytest_twisted.ensureDeferred
async def test_newest_rows_per_room_within_each_range(db):
    h = await StorageHarness.create(db)
    stream = StreamStore(db, h.stores.state)
    first, second = await two_rooms(h)
    events = list(first.events.values())
    top = so(events[-1])
    with StatementCounter(db) as counter:
        rows = await stream.get_room_event_rows(
            {first.room_id: (None, top), second.room_id: (so(events[-3]), top)}, 3
        )
    assert len(counter.statements) == 1
    assert [r.event_id for r in rows[first.room_id]] == [e.event_id for e in events[-1:-4:-1]]
    second_ids = [e.event_id for e in second.events.values() if so(events[-3]) < so(e) <= top]
    assert [r.event_id for r in rows[second.room_id]] == second_ids[::-1][:3]
    assert all(r.room_id == second.room_id for r in rows[second.room_id])
    row = rows[first.room_id][0]
    assert (row.type, row.sender, row.state_key, row.stream_ordering) == (
        "m.room.message",
        BOB,
        None,
        top,
    )
    # The upper bound is inclusive, the lower one exclusive.
    bounded = await stream.get_room_event_rows(
        {first.room_id: (so(events[-3]), so(events[-2]))}, 10
    )
    assert [r.event_id for r in bounded[first.room_id]] == [events[-2].event_id]
    # The cached form gives the same answer, from memory the second time.
    lower = so(events[-3])
    cached = await stream.get_rooms_rows_in_range([first.room_id, second.room_id], lower, top, 3)
    assert list(cached[second.room_id]) == rows[second.room_id]
    assert [r.event_id for r in cached[first.room_id]] == [events[-1].event_id, events[-2].event_id]
    with StatementCounter(db) as counter:
        again = await stream.get_room_rows_in_range(first.room_id, lower, top, 3)
    assert counter.statements == [] and again == cached[first.room_id]
    changed = await stream.get_rooms_changed_between(
        [first.room_id, second.room_id, "!other:example.org"], so(events[-1]) - 1, top
    )
    assert changed == {first.room_id}


@pytest_twisted.ensureDeferred
async def test_outliers_rejected_and_soft_failed_events_are_not_timeline(db):
    h = await StorageHarness.create(db)
    stream = StreamStore(db, h.stores.state)
    first, _ = await two_rooms(h)
    messages = [e for e in first.events.values() if e.type == "m.room.message"]
    for column, value, event in (
        ("outlier", True, messages[0]),
        ("soft_failed", True, messages[1]),
        ("rejection_reason", "auth", messages[2]),
    ):
        await db.execute(
            "t", f"UPDATE events SET {column} = ? WHERE event_id = ?", value, event.event_id
        )
    rows = await stream.get_room_event_rows({first.room_id: (None, 10**9)}, 100)
    ids = {r.event_id for r in rows[first.room_id]}
    assert ids == {e.event_id for e in first.events.values()} - {m.event_id for m in messages[:3]}


@pytest_twisted.ensureDeferred
async def test_state_of_many_groups_in_one_statement(db):
    h = await StorageHarness.create(db)
    stream = StreamStore(db, h.stores.state)
    room = standard_room(V10, members=[BOB, CAROL])
    await h.persist_each(list(room.events.values()))
    room.send("m.room.name", room.creator, {"name": "n"}, "")
    await h.persist([room.events[room.last_event_id]])
    groups = await h.stores.state.get_state_groups_for_events(list(room.events))
    expected = {}
    for group in set(groups.values()):
        expected[group] = dict(await h.stores.state.get_state_ids_for_group(group))
    # Forget what the writer cached, so both paths read the database.
    h.stores.state._get_full_state_for_group.invalidate_all()
    with StatementCounter(db) as counter:
        found = await stream.get_state_for_groups(groups.values())
    assert len(counter.transactions) == 1
    assert {g: dict(s) for g, s in found.items()} == expected
    # And they are cached now.
    with StatementCounter(db) as counter:
        await stream.get_state_for_groups(groups.values())
        await h.stores.state.get_state_ids_for_group(next(iter(groups.values())))
    assert counter.statements == []


@pytest_twisted.ensureDeferred
async def test_summaries_match_the_member_store_and_are_cached(db):
    h = await StorageHarness.create(db)
    stream = StreamStore(db, h.stores.state)
    h.registry.register_store(stream)
    h.registry.register(
        "get_membership_counts",
        stream.get_room_summary.invalidate,
        stream.get_room_summary.invalidate_all,
    )
    room = standard_room(V10, members=[BOB, CAROL, DAVE])
    room.member("@erin:example.org", "invite", sender=room.creator)
    room.send("org.example.custom", BOB, {"membership": "join"}, BOB)
    room.member(CAROL, "leave")
    lonely = RoomBuilder(V10, room_id="!lonely:example.org")
    lonely.create()
    lonely.member(lonely.creator, "join")
    await h.persist(room.events.values())
    await h.persist(lonely.events.values())
    summaries = await stream.get_room_summaries([room.room_id, lonely.room_id])
    summary = summaries[room.room_id]
    counts = await h.stores.members.get_membership_counts(room.room_id)
    assert (summary.joined, summary.invited) == (counts["join"], counts["invite"]) == (3, 1)
    assert summary.heroes(room.creator) == await h.stores.members.get_room_heroes(
        room.room_id, room.creator
    )
    assert summary.heroes(room.creator) == [BOB, DAVE, "@erin:example.org"]
    assert summary.heroes(BOB) == [room.creator, DAVE, "@erin:example.org"]
    assert summaries[lonely.room_id].heroes(lonely.creator) == []
    with StatementCounter(db) as counter:
        await stream.get_room_summaries([room.room_id, lonely.room_id])
    assert counter.statements == []
    # A membership change invalidates through the member counts' name.
    room.member(DAVE, "leave")
    await h.persist([room.events[room.last_event_id]])
    assert (await stream.get_room_summary(room.room_id)).joined == 2


@pytest_twisted.ensureDeferred
async def test_local_membership_changes_and_history(db):
    h = await StorageHarness.create(db)
    stream = StreamStore(db, h.stores.state)
    room = standard_room(V10, join_rule="invite", members=[BOB])
    await h.persist(room.events.values())
    invite = room.events[next(e for e, ev in room.events.items() if ev.membership == "invite")]
    join = room.state[("m.room.member", BOB)]
    leave = room.member(BOB, "leave")
    await h.persist([leave])
    changes = await stream.get_local_membership_changes(BOB, None, so(leave))
    assert [(c.room_id, c.membership, c.event_id) for c in changes] == [
        (room.room_id, "leave", leave.event_id)
    ]
    assert await stream.get_local_membership_changes(BOB, so(leave), so(leave)) == []
    assert await stream.get_local_membership_changes(BOB, None, so(leave) - 1) == []
    history = await stream.get_membership_history(BOB, [room.room_id, "!x:example.org"], so(join))
    assert [(e.membership, e.stream_ordering) for e in history[room.room_id]] == [
        ("invite", so(invite)),
        ("join", so(join)),
    ]
    assert history["!x:example.org"] == []
