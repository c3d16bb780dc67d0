"""State resolution v2.1 (rooms/v12 "State resolution"): the iterative auth
checks of step 2 start from an empty state map, and the full conflicted set
also holds the conflicted state subgraph. Each difference is shown against
room version 11 (v2) on the same fork."""

from __future__ import annotations

import pytest
import pytest_twisted

from atrium.events.room_versions import V11, V12
from atrium.state.loader import EventLoader
from atrium.state.memory_store import InMemoryStateResolutionStore
from atrium.state.v2 import conflicted_state_subgraph
from tests.state.helpers import ALICE, BOB, CAROL, JR, PL, fork, member_key, resolve, state_of
from tests.support.events import standard_room


@pytest.mark.parametrize("rv", [V11, V12], ids=lambda rv: f"v{rv.identifier}")
@pytest_twisted.ensureDeferred
async def test_ban_by_moderator_loses_to_concurrent_demotion_by_creator(rv):
    """The classic v2 case still holds in v12, with the creator's power
    coming from the create event (v12: not listed in the power levels)."""
    room = standard_room(rv, members=[BOB, CAROL], users={BOB: 50})
    banning, demoting = fork(room), fork(room)
    ban = banning.send("m.room.member", BOB, {"membership": "ban"}, CAROL, origin_server_ts=1)
    creator_entry = {} if rv.privileged_creators else {ALICE: 100}
    demotion = demoting.send("m.room.power_levels", ALICE, {"users": creator_entry}, "")

    resolved = await resolve(room, state_of(banning), state_of(demoting))
    assert resolved[PL] == demotion.event_id
    assert resolved[member_key(CAROL)] == room.state[member_key(CAROL)].event_id

    control = await resolve(room, state_of(banning), state_of(room))
    assert control[member_key(CAROL)] == ban.event_id


@pytest.mark.parametrize("rv", [V11, V12], ids=lambda rv: f"v{rv.identifier}")
@pytest_twisted.ensureDeferred
async def test_step_2_starts_from_an_empty_state_map_in_v12(rv):
    """Bob sets the join rules, then is banned; after the ban one fork stays,
    the other has the creator set the join rules again. Bob's ban is
    unconflicted. v2 checks Bob's join rules against the unconflicted state
    (Bob banned: refused), so the creator's join rules stay. v2.1 checks it
    against an empty map, so Bob's membership comes from its own auth events
    (joined): it is allowed and, ordered after the creator's (lower power),
    wins."""
    room = standard_room(rv, members=[BOB], users={BOB: 50})
    bobs_rules = room.send("m.room.join_rules", BOB, {"join_rule": "invite"}, "")
    ban = room.send("m.room.member", ALICE, {"membership": "ban"}, BOB)
    unchanged, reset = fork(room), fork(room)
    creators_rules = reset.send("m.room.join_rules", ALICE, {"join_rule": "public"}, "")

    resolved = await resolve(room, state_of(unchanged), state_of(reset))
    assert resolved[member_key(BOB)] == ban.event_id  # unconflicted, restored in step 5
    expected = bobs_rules if rv.identifier == "12" else creators_rules
    assert resolved[JR] == expected.event_id


@pytest_twisted.ensureDeferred
async def test_conflicted_state_subgraph_is_the_paths_between_conflicted_events():
    """Bob's join cites the join rules it was allowed by; Bob's later join
    rules cite Bob's join. With both join rules conflicted, Bob's join lies
    on the path between them (though every state's auth chain has it, so it
    is not in the auth difference); the power levels below both are not on
    a path between conflicted events."""
    room = standard_room(V12, members=[BOB], users={BOB: 50})
    first_rules = room.state[JR]
    bob_join = room.state[member_key(BOB)]
    assert first_rules.event_id in bob_join.auth_event_ids()
    later_rules = room.send("m.room.join_rules", BOB, {"join_rule": "invite"}, "")
    assert bob_join.event_id in later_rules.auth_event_ids()
    pl = room.state[PL]

    store = InMemoryStateResolutionStore(room.events.values())
    loader = EventLoader(room.room_id, None, store)
    subgraph = await conflicted_state_subgraph({first_rules.event_id, later_rules.event_id}, loader)
    assert subgraph == {first_rules.event_id, bob_join.event_id, later_rules.event_id}
    assert pl.event_id not in subgraph

    # Unrelated conflicted events: no path, just themselves.
    topic = room.send("m.room.topic", ALICE, {"topic": "t"}, "")
    alone = await conflicted_state_subgraph({topic.event_id, first_rules.event_id}, loader)
    assert alone == {topic.event_id, first_rules.event_id}


@pytest_twisted.ensureDeferred
async def test_v12_resolution_keeps_the_create_event_and_creators_power():
    """Forks of a v12 room resolve with the create event (never an auth
    event of its own) in the state, and the creator, unlisted, still
    outranks a moderator at 100."""
    room = standard_room(V12, members=[BOB], users={BOB: 100})
    creator_fork, bob_fork = fork(room), fork(room)
    kept = creator_fork.send("m.room.power_levels", ALICE, {"users": {BOB: 0}}, "")
    bob_fork.send("m.room.power_levels", BOB, {"users": {BOB: 100, CAROL: 100}}, "")

    resolved = await resolve(room, state_of(creator_fork), state_of(bob_fork))
    assert resolved[("m.room.create", "")] == room.state[("m.room.create", "")].event_id
    # The creator's change sorts first (infinite power); Bob's, checked after
    # it, fails since Bob is now at 0.
    assert resolved[PL] == kept.event_id
