"""InMemoryStateResolutionStore: event look-ups and auth chain differences."""

from __future__ import annotations

import pytest_twisted

from atrium.events.event import make_event_from_dict
from atrium.events.room_versions import KNOWN_ROOM_VERSIONS
from atrium.state.memory_store import InMemoryStateResolutionStore
from tests.state.helpers import ALICE, BOB, CAROL, fork, state_of
from tests.state.test_auth_chain import naive_difference
from tests.support.events import make_pdu, standard_room

RV = KNOWN_ROOM_VERSIONS["10"]


@pytest_twisted.ensureDeferred
async def test_get_events_leaves_out_unknown_and_by_default_rejected_events():
    room = standard_room(RV, members=[BOB])
    topic = room.build("m.room.topic", ALICE, {"topic": "t"}, "")
    rejected = make_event_from_dict(topic.get_dict(), RV, rejected_reason="auth")
    store = InMemoryStateResolutionStore([*room.events.values(), rejected])
    wanted = [rejected.event_id, "$unknown"]
    assert await store.get_events(wanted) == {}
    assert await store.get_events(wanted, allow_rejected=True) == {rejected.event_id: rejected}


@pytest_twisted.ensureDeferred
async def test_auth_chain_difference_of_forked_room_states_matches_the_definition():
    room = standard_room(RV, members=[BOB, CAROL], users={BOB: 50})
    left, right = fork(room), fork(room)
    left.send("m.room.member", BOB, {"membership": "ban"}, CAROL)
    left.send("m.room.power_levels", ALICE, {"users": {ALICE: 100, BOB: 50, CAROL: 10}}, "")
    right.send("m.room.member", CAROL, {"membership": "leave"}, CAROL)
    right.member("@dave:example.org", "join")
    state_sets = [set(state_of(left).values()), set(state_of(right).values())]
    graph = {e.event_id: (e.depth, e.auth_event_ids()) for e in room.events.values()}

    store = InMemoryStateResolutionStore(room.events.values())
    difference = await store.get_auth_chain_difference(room.room_id, state_sets)
    assert difference == naive_difference(graph, state_sets)
    assert difference  # the forks did diverge


@pytest_twisted.ensureDeferred
async def test_forged_depths_do_not_make_the_store_misreport():
    """`depth` claims the create event is the newest event of all; the store
    orders the walk by depths raised above each auth event's, so the
    difference is still exact."""
    create = make_pdu(
        RV, type="m.room.create", sender=ALICE, content={"creator": ALICE}, state_key="", depth=999
    )
    common = make_pdu(
        RV,
        type="m.room.member",
        sender=ALICE,
        content={"membership": "join"},
        state_key=ALICE,
        depth=1,
        auth_events=[create.event_id],
    )
    left = make_pdu(
        RV,
        type="m.room.topic",
        sender=ALICE,
        content={"topic": "l"},
        state_key="",
        depth=2,
        auth_events=[create.event_id, common.event_id],
    )
    right = make_pdu(
        RV,
        type="m.room.name",
        sender=ALICE,
        content={"name": "r"},
        state_key="",
        depth=2,
        auth_events=[common.event_id],
    )
    events = [create, common, left, right]
    graph = {e.event_id: (e.depth, e.auth_event_ids()) for e in events}
    state_sets = [{left.event_id}, {right.event_id}]
    store = InMemoryStateResolutionStore(events)
    assert (
        await store.get_auth_chain_difference("!r:x", state_sets)
        == naive_difference(graph, state_sets)
        == {left.event_id, right.event_id}
    )
