"""EventPersister: group commit, forward extremities and current state."""

from __future__ import annotations

import sqlite3

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from atrium.events.event import Event
from atrium.events.room_versions import V10
from atrium.state import resolve_events
from atrium.state.context import EventContext
from atrium.state.memory_store import InMemoryStateResolutionStore
from tests.storage.harness import StatementCounter, StorageHarness
from tests.support.events import RoomBuilder, standard_room

BOB = "@bob:example.org"
# A unique index refusing a row, on either engine.
INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg2.IntegrityError)
CAROL = "@carol:example.org"


async def _extremities(h: StorageHarness, room) -> frozenset[str]:
    return await h.stores.events.get_latest_event_ids_in_room(room.room_id)


async def _stored_extremities(h: StorageHarness, room) -> set[str]:
    rows = await h.db.execute(
        "t", "SELECT event_id FROM event_forward_extremities WHERE room_id = ?", room.room_id
    )
    return {r[0] for r in rows}


# -- group commit -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_requests_queued_during_a_commit_share_the_next_transaction(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[BOB])
    await h.persist(room.events.values())
    msgs = [room.send("m.room.message", BOB, {"body": str(i)}) for i in range(10)]
    items = await h.contexts_for(msgs)
    # Let the persister go idle, so the first request starts a commit at once.
    await task.deferLater(reactor, 0, lambda: None)
    with StatementCounter(db) as counter:
        results = await defer.gatherResults(
            [defer.ensureDeferred(h.persister.persist_events([item])) for item in items]
        )
    # The first request commits alone; the nine queued meanwhile commit together.
    assert counter.transactions.count("persist_events") == 2
    # Each caller got the position of its own event; the room's order is kept.
    assert results == [m.internal_metadata.stream_ordering for m in msgs]
    assert results == sorted(results) and len(set(results)) == 10
    assert await _extremities(h, room) == {msgs[-1].event_id}
    assert await _stored_extremities(h, room) == {msgs[-1].event_id}


@pytest_twisted.ensureDeferred
async def test_a_failing_request_does_not_fail_the_others_in_its_batch(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[BOB])
    await h.persist(room.events.values())
    first = room.send("m.room.message", BOB, {"body": "first"})
    good = room.send("m.room.message", BOB, {"body": "good"})
    bad = room.send("m.room.message", BOB, {"body": "bad"})
    for event in (good, bad):
        # The same client transaction twice: the second breaks a unique index.
        event.internal_metadata.txn_id = "same"
        event.internal_metadata.device_id = "DEV"
    items = await h.contexts_for([first, good, bad])
    d_first = defer.ensureDeferred(h.persister.persist_events([items[0]]))
    d_good = defer.ensureDeferred(h.persister.persist_events([items[1]]))
    d_bad = defer.ensureDeferred(h.persister.persist_events([items[2]]))
    await d_first
    assert await d_good == good.internal_metadata.stream_ordering
    with pytest.raises(INTEGRITY_ERRORS):
        await d_bad
    assert await h.stores.events.have_seen_events([good.event_id, bad.event_id]) == {good.event_id}


@pytest_twisted.ensureDeferred
async def test_persisting_an_event_again_is_a_no_op(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[BOB])
    await h.persist(room.events.values())
    msg = room.send("m.room.message", BOB, {"body": "once"})
    ((_, context),) = await h.contexts_for([msg])
    first = await h.persister.persist_events([(msg, context), (msg, context)])
    count = await h.count("events")
    # The same event received again (a distinct object, as from the network).
    again = Event(msg.get_dict(), V10)
    assert await h.persister.persist_events([(again, context)]) == first
    assert again.internal_metadata.stream_ordering == first
    assert await h.count("events") == count


# -- forward extremities ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_forks_add_extremities_and_a_merge_removes_them(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[BOB])
    await h.persist(room.events.values())
    base = room.last_event_id
    a = room.send("m.room.message", BOB, {"body": "a"})
    room.last_event_id = base
    b = room.send("m.room.message", room.creator, {"body": "b"})
    await h.persist_each([a, b])
    assert await _extremities(h, room) == {a.event_id, b.event_id}
    merge = room.send("m.room.message", BOB, {"body": "m"}, prev_events=[a.event_id, b.event_id])
    await h.persist([merge])
    assert await _extremities(h, room) == {merge.event_id}
    assert await _stored_extremities(h, room) == {merge.event_id}


@pytest_twisted.ensureDeferred
async def test_soft_failed_outlier_and_rejected_events_never_become_extremities(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[BOB])
    await h.persist(room.events.values())
    tip = room.last_event_id
    soft = room.build("m.room.message", BOB, {"body": "soft"})
    soft.internal_metadata.soft_failed = True
    outlier = room.build("m.room.message", BOB, {"body": "outlier"}, origin_server_ts=1)
    outlier.internal_metadata.outlier = True
    rejected = room.build("m.room.message", BOB, {"body": "rejected"}, origin_server_ts=2)
    items = await h.contexts_for([soft, rejected])
    items[1] = (rejected, items[1][1].with_rejection("auth"))
    items.append((outlier, EventContext.for_outlier()))
    await h.persister.persist_events(items)
    assert await _extremities(h, room) == {tip}
    assert await _stored_extremities(h, room) == {tip}


@pytest.mark.parametrize("same_batch", [False, True])
@pytest_twisted.ensureDeferred
async def test_referencing_a_soft_failed_event_removes_what_it_built_on(db, same_batch):
    """Extremities do not pile up behind soft-failed events (also two deep)."""
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[BOB])
    await h.persist(room.events.values())
    tip = room.last_event_id
    soft1 = room.build("m.room.message", BOB, {"body": "s1"})
    soft1.internal_metadata.soft_failed = True
    room.add(soft1)
    soft2 = room.build("m.room.message", BOB, {"body": "s2"})
    soft2.internal_metadata.soft_failed = True
    room.add(soft2)
    child = room.send("m.room.message", room.creator, {"body": "child"})
    if same_batch:
        await h.persist([soft1, soft2, child])
    else:
        await h.persist([soft1, soft2])
        assert await _extremities(h, room) == {tip}
        await h.persist([child])
    assert await _extremities(h, room) == {child.event_id}
    assert await _stored_extremities(h, room) == {child.event_id}


@pytest_twisted.ensureDeferred
async def test_filling_a_gap_leaves_only_the_newest_extremity(db):
    """A late prev_event already referenced by a stored event is not an extremity."""
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[BOB])
    await h.persist(room.events.values())
    missing = room.send("m.room.message", BOB, {"body": "late"})
    after = room.send("m.room.message", BOB, {"body": "after"})
    state = {k: e.event_id for k, e in room.state.items()}
    items = await h.contexts_for([after], state_ids_before={after.event_id: state})
    await h.persister.persist_events(items)
    assert len(await _extremities(h, room)) == 2
    await h.persist([missing])
    assert await _extremities(h, room) == {after.event_id}


# -- current state --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_linear_state_change_updates_current_state_by_delta(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[BOB])
    await h.persist(room.events.values())
    h.stores.members.get_current_state_ids.invalidate_all()
    join = room.member(CAROL, "join")
    topic = room.send("m.room.topic", CAROL, {"topic": "t"}, "")
    msg = room.send("m.room.message", CAROL, {"body": "x"})
    with StatementCounter(db) as counter:
        await h.persist([join, topic, msg])
    # The delta path never loads the room's whole current state.
    assert "get_current_state_ids" not in counter.transactions
    expected = {k: e.event_id for k, e in room.state.items()}
    rows = await db.execute(
        "t",
        "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = ?",
        room.room_id,
    )
    assert {(r[0], r[1]): r[2] for r in rows} == expected
    assert dict(await h.stores.members.get_current_state_ids(room.room_id)) == expected
    deltas = await db.execute(
        "t",
        "SELECT type, state_key, event_id, prev_event_id FROM current_state_delta_stream"
        " WHERE stream_id = ?",
        msg.internal_metadata.stream_ordering,
    )
    assert sorted(deltas) == sorted(
        [("m.room.member", CAROL, join.event_id, None), ("m.room.topic", "", topic.event_id, None)]
    )


@pytest_twisted.ensureDeferred
async def test_forked_state_is_resolved_into_current_state(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[BOB], users={BOB: 50})
    await h.persist(room.events.values())
    base = room.last_event_id
    base_state = {k: e.event_id for k, e in room.state.items()}
    a = room.send("m.room.topic", room.creator, {"topic": "by creator"}, "")
    state_a = {k: e.event_id for k, e in room.state.items()}
    room.last_event_id = base
    room.state = {k: room.events[v] for k, v in base_state.items()}
    b = room.send("m.room.topic", BOB, {"topic": "by bob"}, "")
    state_b = {k: e.event_id for k, e in room.state.items()}
    await h.persist_each([a, b])
    expected = await resolve_events(
        room.room_id,
        V10,
        [state_a, state_b],
        None,
        InMemoryStateResolutionStore(room.events.values()),
    )
    assert dict(await h.stores.members.get_current_state_ids(room.room_id)) == expected
    h.stores.members.get_current_state_ids.invalidate_all()
    assert dict(await h.stores.members.get_current_state_ids(room.room_id)) == expected


@pytest_twisted.ensureDeferred
async def test_room_version_for_resolution_comes_from_the_create_event_in_the_batch(db):
    """No rooms row exists while the batch is prepared: a database look-up would fail."""
    h = await StorageHarness.create(db)
    room = RoomBuilder(V10, room_id="!fresh:example.org")
    room.create()
    room.member(room.creator, "join")
    room.send("m.room.power_levels", room.creator, {"users": {room.creator: 100}}, "")
    base = room.send("m.room.join_rules", room.creator, {"join_rule": "public"}, "")
    base_state = dict(room.state)
    room.member(BOB, "join")
    room.last_event_id = base.event_id
    room.state = dict(base_state)
    room.send("m.room.name", room.creator, {"name": "n"}, "")
    assert await h.stores.rooms.get_room(room.room_id) is None

    await h.persist(room.events.values())
    assert len(await _extremities(h, room)) == 2
    current = await h.stores.members.get_current_state_ids(room.room_id)
    assert ("m.room.name", "") in current and ("m.room.member", BOB) in current
    assert (await h.stores.rooms.get_room_version(room.room_id)) == V10
