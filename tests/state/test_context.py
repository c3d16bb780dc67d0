"""compute_event_context: state before/after events, new groups, chains, rejection."""

from __future__ import annotations

import pytest
import pytest_twisted

from atrium.events.room_versions import V10
from atrium.state import resolve_events
from atrium.state.context import EventContext, MissingStateError, compute_event_context
from atrium.state.memory_store import InMemoryStateResolutionStore
from tests.storage.harness import StatementCounter, StorageHarness
from tests.support.events import standard_room

BOB = "@bob:example.org"


def _state(room) -> dict[tuple[str, str], str]:
    return {k: e.event_id for k, e in room.state.items()}


async def _stored_room(db, **kw):
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[BOB], **kw)
    await h.persist(room.events.values())
    return h, room


async def _context(h: StorageHarness, event, **kw) -> EventContext:
    return await compute_event_context(event, h.stores.state, h.resolver, **kw)


@pytest_twisted.ensureDeferred
async def test_outliers_have_no_state(db):
    h, room = await _stored_room(db)
    event = room.build("m.room.message", BOB, {"body": "x"})
    event.internal_metadata.outlier = True
    context = await _context(h, event)
    assert context.is_outlier
    assert (context.state_group_before, context.state_group_after) == (None, None)
    assert context.state_group_writes == ()


@pytest_twisted.ensureDeferred
async def test_a_message_shares_its_prev_events_group(db):
    h, room = await _stored_room(db)
    tip_group = (await h.stores.state.get_state_groups_for_events([room.last_event_id]))[
        room.last_event_id
    ]
    msg = room.build("m.room.message", BOB, {"body": "x"})
    with StatementCounter(db) as counter:
        context = await _context(h, msg)
    # The tip's group was noted when it was persisted: no database work.
    assert counter.statements == []
    assert context.state_group_before == context.state_group_after == tip_group
    assert context.state_group_writes == ()
    assert dict(await context.get_state_ids_before(h.stores.state)) == _state(room)


@pytest_twisted.ensureDeferred
async def test_a_state_event_gets_a_new_group_as_a_delta(db):
    h, room = await _stored_room(db)
    before_state = _state(room)
    topic = room.send("m.room.topic", BOB, {"topic": "t"}, "")
    context = await _context(h, topic)
    assert context.state_group_after != context.state_group_before
    assert context.prev_group == context.state_group_before
    assert dict(context.delta_ids) == {("m.room.topic", ""): topic.event_id}
    assert dict(await context.get_state_ids_before(h.stores.state)) == before_state
    assert dict(await context.get_state_ids_after(h.stores.state)) == _state(room)
    (write,) = context.state_group_writes
    assert write.group == context.state_group_after and write.prev_group == context.prev_group

    rejected = context.with_rejection("auth")
    assert rejected.rejected == "auth"
    assert rejected.state_group_after == rejected.state_group_before == context.state_group_before
    assert rejected.state_group_writes == ()


@pytest_twisted.ensureDeferred
async def test_diverging_prev_events_are_resolved_with_the_room_version(db):
    h, room = await _stored_room(db, users={BOB: 50})
    base_state = _state(room)
    base = room.last_event_id
    a = room.send("m.room.topic", room.creator, {"topic": "a"}, "")
    state_a = _state(room)
    room.last_event_id = base
    room.state = {k: room.events[v] for k, v in base_state.items()}
    b = room.send("m.room.topic", BOB, {"topic": "b"}, "")
    state_b = _state(room)
    await h.persist_each([a, b])
    merge = room.build("m.room.message", BOB, {"body": "m"}, prev_events=[a.event_id, b.event_id])
    context = await _context(h, merge)
    expected = await resolve_events(
        room.room_id,
        V10,
        [state_a, state_b],
        None,
        InMemoryStateResolutionStore(room.events.values()),
    )
    assert dict(await context.get_state_ids_before(h.stores.state)) == expected
    (write,) = context.state_group_writes
    assert write.group == context.state_group_before == context.state_group_after
    # Stored as a small delta against one of the two parents.
    assert write.prev_group is not None and len(write.delta_ids) <= 1
    assert context.prev_group == write.prev_group


@pytest_twisted.ensureDeferred
async def test_a_chain_in_one_batch_uses_the_contexts_of_earlier_events(db):
    h, room = await _stored_room(db)
    topic = room.send("m.room.topic", BOB, {"topic": "t"}, "")
    name = room.send("m.room.name", BOB, {"name": "n"}, "")
    msg = room.send("m.room.message", BOB, {"body": "x"})
    ctx_topic = await _context(h, topic)
    ctx_name = await _context(h, name, prev_contexts={topic.event_id: ctx_topic})
    ctx_msg = await _context(
        h, msg, prev_contexts={topic.event_id: ctx_topic, name.event_id: ctx_name}
    )
    assert ctx_name.state_group_before == ctx_topic.state_group_after
    assert ctx_msg.state_group_before == ctx_name.state_group_after
    # Forget the state cache: the chain's state still comes from the contexts.
    h.stores.state._get_full_state_for_group.invalidate_all()
    assert dict(await ctx_msg.get_state_ids_before(h.stores.state)) == _state(room)
    await h.persister.persist_events([(topic, ctx_topic), (name, ctx_name), (msg, ctx_msg)])
    assert dict(await h.stores.state.get_state_ids_for_event(msg.event_id)) == _state(room)


@pytest_twisted.ensureDeferred
async def test_unknown_prev_events_need_the_state_given(db):
    h, room = await _stored_room(db)
    room.send("m.room.message", BOB, {"body": "never seen"})
    after = room.build("m.room.message", BOB, {"body": "x"})
    with pytest.raises(MissingStateError):
        await _context(h, after)
    context = await _context(h, after, state_ids_before=_state(room))
    assert dict(await context.get_state_ids_before(h.stores.state)) == _state(room)
    assert len(context.state_group_writes) == 1
