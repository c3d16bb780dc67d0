"""PersistEventStore: one transaction per batch, batched cache invalidation."""

from __future__ import annotations

import sqlite3

import psycopg2
import pytest
import pytest_twisted

from atrium.events.room_versions import V10
from atrium.state.context import EventContext
from atrium.storage.persist_events import DeltaState, PersistEventStore
from tests.storage.harness import StorageHarness
from tests.support.events import standard_room

BOB = "@bob:example.org"
# A unique index refusing a row, on either engine.
INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg2.IntegrityError)
CAROL = "@carol:example.org"

ALL_TABLES = [
    "rooms",
    "events",
    "event_json",
    "event_edges",
    "event_auth",
    "event_forward_extremities",
    "event_backward_extremities",
    "state_events",
    "redactions",
    "state_groups",
    "state_group_edges",
    "state_groups_state",
    "event_to_state_groups",
    "current_state_events",
    "current_state_delta_stream",
    "room_memberships",
    "local_current_membership",
    "event_txn_id",
    "stream_positions",
]


class _FailingLate(PersistEventStore):
    """Fails after every other table of the batch has been written."""

    def _store_txn_ids_txn(self, txn, batch):
        super()._store_txn_ids_txn(txn, batch)
        raise RuntimeError("injected failure")


def _batch_with_state_and_membership(room):
    join = room.member(CAROL, "join")
    topic = room.send("m.room.topic", BOB, {"topic": "new"}, "")
    msg = room.send("m.room.message", CAROL, {"body": "hello"})
    return [join, topic, msg]


async def _prepared(h: StorageHarness):
    room = standard_room(V10, members=[BOB])
    await h.persist(room.events.values())
    # Warm the caches a failed write must not disturb.
    await h.stores.members.get_users_in_room(room.room_id)
    await h.stores.members.get_current_state_ids(room.room_id)
    return room


@pytest_twisted.ensureDeferred
async def test_an_injected_failure_late_in_the_transaction_leaves_nothing(db):
    h = await StorageHarness.create(db)
    room = await _prepared(h)
    events = _batch_with_state_and_membership(room)
    before = await h.snapshot(ALL_TABLES)
    calls_before = len(h.invalidator.calls)
    token_before = h.stores.events.get_current_events_token()

    failing = _FailingLate(
        db,
        events=h.stores.events,
        state=h.stores.state,
        invalidator=h.invalidator,
        clock=h.persister.persist_store.clock,
        instance_name="master",
        is_mine=h.persister.persist_store.is_mine,
    )
    h.persister.persist_store = failing
    with pytest.raises(RuntimeError, match="injected"):
        await h.persist(events)

    assert await h.snapshot(ALL_TABLES) == before
    assert len(h.invalidator.calls) == calls_before
    assert all(e.internal_metadata.stream_ordering is None for e in events)
    assert CAROL not in await h.stores.members.get_users_in_room(room.room_id)
    assert await h.stores.events.have_seen_events([e.event_id for e in events]) == set()
    # Nothing half-done either: the same events persist fine afterwards.
    h.persister.persist_store = PersistEventStore(
        db,
        events=h.stores.events,
        state=h.stores.state,
        invalidator=h.invalidator,
        clock=failing.clock,
        instance_name="master",
        is_mine=failing.is_mine,
    )
    await h.persist(events)
    assert CAROL in await h.stores.members.get_users_in_room(room.room_id)
    assert h.stores.events.get_current_events_token() > token_before


@pytest_twisted.ensureDeferred
async def test_a_duplicate_event_in_the_batch_rolls_everything_back(db):
    """The store itself does not deduplicate: the second insert fails, all is undone."""
    h = await StorageHarness.create(db)
    room = await _prepared(h)
    events = _batch_with_state_and_membership(room)
    items = await h.contexts_for(events)
    before = await h.snapshot(ALL_TABLES)
    new_extrems = {room.room_id: {events[-1].event_id}}
    delta = DeltaState(to_insert={("m.room.member", CAROL): events[0].event_id})
    with pytest.raises(INTEGRITY_ERRORS):
        await h.persister.persist_store.persist_events_and_state_updates(
            [*items, items[0]],
            new_forward_extremities=new_extrems,
            state_deltas={room.room_id: delta},
        )
    assert await h.snapshot(ALL_TABLES) == before


@pytest_twisted.ensureDeferred
async def test_current_state_change_invalidates_each_cache_once_per_room(db):
    """All changed members of a room are named in ONE call per cache (one caches row)."""
    h = await StorageHarness.create(db)
    room = standard_room(V10)
    await h.persist(room.events.values())
    users = [f"@j{i}:example.org" for i in range(5)]
    joins = [room.member(u, "join") for u in users]
    h.invalidator.calls.clear()
    await h.persist(joins)
    by_cache: dict[str, list] = {}
    for name, keys in h.invalidator.calls:
        by_cache.setdefault(name, []).append(sorted(keys))
    assert by_cache["get_rooms_for_user_with_stream_ordering"] == [[(u,) for u in users]]
    assert by_cache["get_current_state_ids"] == [[(room.room_id,)]]
    assert by_cache["get_users_in_room"] == [[(room.room_id,)]]
    assert by_cache["get_local_current_membership_for_user_in_room"] == [
        [(u, room.room_id) for u in users]
    ]
    assert by_cache["get_latest_event_ids_in_room"] == [[(room.room_id,)]]


@pytest_twisted.ensureDeferred
async def test_rows_written_for_a_batch(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[BOB])
    msg = room.build("m.room.message", BOB, {"body": "x"})
    msg.internal_metadata.txn_id = "t1"
    msg.internal_metadata.device_id = "D"
    room.add(msg)
    position = await h.persist(room.events.values())
    assert position == msg.internal_metadata.stream_ordering
    assert position == h.stores.events.get_current_events_token()
    rows = await db.execute(
        "t", "SELECT stream_name, instance_name, stream_id FROM stream_positions"
    )
    assert rows == [("events", "master", position)]
    assert await h.count("event_txn_id", "txn_id = ?", "t1") == 1
    assert await h.count("current_state_delta_stream") == len(room.state)
    assert await h.count("room_memberships") == 2
    rows = await db.execute("t", "SELECT room_version, creator FROM rooms")
    assert rows == [("10", room.creator)]
    # topological_ordering is the depth; stream orderings follow the batch order.
    rows = await db.execute(
        "t", "SELECT event_id, topological_ordering FROM events ORDER BY stream_ordering"
    )
    assert [r[0] for r in rows] == list(room.events)
    assert [r[1] for r in rows] == [e.depth for e in room.events.values()]


@pytest_twisted.ensureDeferred
async def test_backward_extremities_track_missing_prev_events(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[BOB])
    await h.persist(room.events.values())
    old_tip = room.last_event_id
    # An event whose prev_event we lack (federation gap): state supplied.
    missing = room.build("m.room.message", BOB, {"body": "missed"})
    room.add(missing)
    after_gap = room.send("m.room.message", BOB, {"body": "after"})
    state_before = {k: e.event_id for k, e in room.state.items()}
    items = await h.contexts_for([after_gap], state_ids_before={after_gap.event_id: state_before})
    await h.persister.persist_events(items)
    assert await h.stores.events.get_backward_extremities(room.room_id) == {missing.event_id}
    extremities = {old_tip, after_gap.event_id}
    assert await h.stores.events.get_latest_event_ids_in_room(room.room_id) == extremities
    # Backfilling the missing event fills the gap.
    items = await h.contexts_for([missing], state_ids_before={missing.event_id: state_before})
    await h.persister.persist_events(items, backfilled=True)
    assert await h.stores.events.get_backward_extremities(room.room_id) == set()
    assert missing.internal_metadata.stream_ordering < 0
    # Backfilled events do not move the forward extremities.
    assert await h.stores.events.get_latest_event_ids_in_room(room.room_id) == extremities


@pytest_twisted.ensureDeferred
async def test_outliers_get_no_state_rows(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10)
    await h.persist(room.events.values())
    groups = await h.count("state_groups")
    topic = room.build("m.room.topic", room.creator, {"topic": "outlier"}, "")
    topic.internal_metadata.outlier = True
    await h.persister.persist_events([(topic, EventContext.for_outlier())])
    assert await h.count("state_groups") == groups
    assert await h.count("event_to_state_groups", "event_id = ?", topic.event_id) == 0
    current = await h.stores.members.get_current_state_ids(room.room_id)
    assert ("m.room.topic", "") not in current
    assert await h.count("state_events", "event_id = ?", topic.event_id) == 1
