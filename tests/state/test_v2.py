"""State resolution v2 on the classic fork scenarios (rooms/v2 "State
resolution"). Each test also resolves a control, the same fork against an
unchanged room, so it shows which part of the algorithm made the difference.

Timestamps are set so that ordering by origin_server_ts alone would give the
opposite answer wherever the power or mainline ordering is what matters.
"""

from __future__ import annotations

import pytest
import pytest_twisted

from atrium.events.event import make_event_from_dict
from atrium.state import resolve_events
from atrium.state.memory_store import InMemoryStateResolutionStore
from atrium.state.v2 import is_power_event, iterative_auth_checks, separate
from tests.state.helpers import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    EVE,
    JR,
    PL,
    TOPIC,
    V2_VERSIONS,
    fork,
    is_allowed,
    member_key,
    resolve,
    state_of,
    vid,
)
from tests.support.events import standard_room

every_v2_version = pytest.mark.parametrize("rv", V2_VERSIONS, ids=vid)


@every_v2_version
@pytest_twisted.ensureDeferred
async def test_ban_by_moderator_loses_to_concurrent_demotion_by_admin(rv):
    """Power events are ordered by the sender's power: the admin's demotion
    goes first, and the moderator's ban, sent earlier, then fails."""
    room = standard_room(rv, members=[BOB, CAROL], users={BOB: 50})
    banning, demoting = fork(room), fork(room)
    ban = banning.send("m.room.member", BOB, {"membership": "ban"}, CAROL, origin_server_ts=1)
    # The newest event of all: by timestamps alone the ban would go first.
    demotion = demoting.send("m.room.power_levels", ALICE, {"users": {ALICE: 100}}, "")
    assert is_allowed(banning, ban) and is_allowed(demoting, demotion)

    resolved = await resolve(room, state_of(banning), state_of(demoting))
    assert resolved[PL] == demotion.event_id
    assert resolved[member_key(CAROL)] == room.state[member_key(CAROL)].event_id

    control = await resolve(room, state_of(banning), state_of(room))
    assert control[member_key(CAROL)] == ban.event_id


@every_v2_version
@pytest_twisted.ensureDeferred
async def test_topic_reset_when_its_sender_is_banned_concurrently(rv):
    """The ban (a power event) is applied first; the banned user's topic,
    checked afterwards, fails, and the previous topic comes back."""
    room = standard_room(rv, members=[BOB], users={BOB: 50})
    old_topic = room.send("m.room.topic", ALICE, {"topic": "old"}, "")
    topic_fork, ban_fork = fork(room), fork(room)
    # Sent after the old topic, so it would win without the ban.
    new_topic = topic_fork.send("m.room.topic", BOB, {"topic": "new"}, "")
    ban = ban_fork.send("m.room.member", ALICE, {"membership": "ban"}, BOB)

    resolved = await resolve(room, state_of(topic_fork), state_of(ban_fork))
    assert resolved[TOPIC] == old_topic.event_id
    assert resolved[member_key(BOB)] == ban.event_id

    control = await resolve(room, state_of(topic_fork), state_of(room))
    assert control[TOPIC] == new_topic.event_id


@every_v2_version
@pytest_twisted.ensureDeferred
async def test_topic_is_not_reset_by_an_unrelated_power_levels_change(rv):
    """Mainline ordering: a topic based on the newer power levels is applied
    after one based on older ones, even when its clock says it is older."""
    room = standard_room(rv, members=[BOB], users={BOB: 50})
    older_fork, newer_fork = fork(room), fork(room)
    older = older_fork.send("m.room.topic", ALICE, {"topic": "older"}, "", origin_server_ts=5000)
    newer_fork.send("m.room.power_levels", ALICE, {"users": {ALICE: 100, BOB: 50, CAROL: 10}}, "")
    newer = newer_fork.send("m.room.topic", BOB, {"topic": "newer"}, "", origin_server_ts=1000)

    resolved = await resolve(room, state_of(older_fork), state_of(newer_fork))
    assert resolved[TOPIC] == newer.event_id

    # Without the power levels change both topics share a mainline
    # position, and the timestamp decides.
    plain_fork = fork(room)
    plain_fork.send("m.room.topic", BOB, {"topic": "newer"}, "", origin_server_ts=1000)
    control = await resolve(room, state_of(older_fork), state_of(plain_fork))
    assert control[TOPIC] == older.event_id


@every_v2_version
@pytest_twisted.ensureDeferred
async def test_join_rule_evasion_join_during_concurrent_switch_to_invite_is_refused(rv):
    room = standard_room(rv, members=[BOB])
    closing, joining = fork(room), fork(room)
    invite_only = closing.send("m.room.join_rules", ALICE, {"join_rule": "invite"}, "")
    join = joining.member(EVE, "join")

    resolved = await resolve(room, state_of(closing), state_of(joining))
    assert resolved[JR] == invite_only.event_id
    assert member_key(EVE) not in resolved

    control = await resolve(room, state_of(room), state_of(joining))
    assert control[member_key(EVE)] == join.event_id


@every_v2_version
@pytest_twisted.ensureDeferred
async def test_off_topic_power_levels_granted_by_a_demoted_moderator_are_undone(rv):
    """Bob (moderator) raises Carol, who changes power levels and the topic;
    concurrently the admin demotes Bob. Every event resting on Bob's power
    fails, power level events and the non-power topic alike."""
    room = standard_room(rv, members=[BOB, CAROL], users={BOB: 50})
    granting, demoting = fork(room), fork(room)
    granting.send(
        "m.room.power_levels",
        BOB,
        {"users": {ALICE: 100, BOB: 50, CAROL: 50}},
        "",
        origin_server_ts=1,
    )
    carol_pl = granting.send(
        "m.room.power_levels",
        CAROL,
        {"users": {ALICE: 100, BOB: 50, CAROL: 50}, "events": {"m.room.name": 50}},
        "",
        origin_server_ts=2,
    )
    carol_topic = granting.send("m.room.topic", CAROL, {"topic": "mine"}, "", origin_server_ts=3)
    demotion = demoting.send(
        "m.room.power_levels", ALICE, {"users": {ALICE: 100}}, "", origin_server_ts=4
    )
    assert all(is_allowed(granting, e) for e in (carol_pl, carol_topic))

    resolved = await resolve(room, state_of(granting), state_of(demoting))
    assert resolved[PL] == demotion.event_id
    assert TOPIC not in resolved

    control = await resolve(room, state_of(granting), state_of(room))
    assert control[PL] == carol_pl.event_id
    assert control[TOPIC] == carol_topic.event_id


@every_v2_version
@pytest_twisted.ensureDeferred
async def test_concurrent_joins_of_different_users_are_both_kept(rv):
    room = standard_room(rv, members=[BOB])
    first, second = fork(room), fork(room)
    carol_join = first.member(CAROL, "join")
    dave_join = second.member(DAVE, "join")

    resolved = await resolve(room, state_of(first), state_of(second))
    assert resolved[member_key(CAROL)] == carol_join.event_id
    assert resolved[member_key(DAVE)] == dave_join.event_id


@every_v2_version
@pytest_twisted.ensureDeferred
async def test_ban_beats_concurrent_join_of_the_banned_user(rv):
    room = standard_room(rv, members=[BOB])
    banning, joining = fork(room), fork(room)
    ban = banning.send("m.room.member", ALICE, {"membership": "ban"}, EVE, origin_server_ts=2)
    joining.send("m.room.member", EVE, {"membership": "join"}, EVE, origin_server_ts=1)

    resolved = await resolve(room, state_of(joining), state_of(banning))
    assert resolved[member_key(EVE)] == ban.event_id


@every_v2_version
@pytest_twisted.ensureDeferred
async def test_kick_and_concurrent_rename_in_invite_only_room_kick_wins(rv):
    room = standard_room(rv, join_rule="invite", members=[BOB])
    kicking, renaming = fork(room), fork(room)
    kick = kicking.send("m.room.member", ALICE, {"membership": "leave"}, BOB, origin_server_ts=2)
    renaming.send(
        "m.room.member",
        BOB,
        {"membership": "join", "displayname": "B"},
        BOB,
        origin_server_ts=1,
    )

    resolved = await resolve(room, state_of(kicking), state_of(renaming))
    assert resolved[member_key(BOB)] == kick.event_id


@every_v2_version
@pytest_twisted.ensureDeferred
async def test_kick_and_concurrent_rename_in_public_room_rename_rejoins(rv):
    """The kick is a power event, so it is applied first; the rename (a
    join) comes after it and is allowed in a public room."""
    room = standard_room(rv, members=[BOB])
    kicking, renaming = fork(room), fork(room)
    kicking.send("m.room.member", ALICE, {"membership": "leave"}, BOB, origin_server_ts=2)
    rename = renaming.send(
        "m.room.member",
        BOB,
        {"membership": "join", "displayname": "B"},
        BOB,
        origin_server_ts=1,
    )

    resolved = await resolve(room, state_of(kicking), state_of(renaming))
    assert resolved[member_key(BOB)] == rename.event_id


@every_v2_version
@pytest_twisted.ensureDeferred
async def test_unconflicted_state_passes_through_even_if_it_would_now_fail_auth(rv):
    room = standard_room(rv, members=[BOB, CAROL], users={BOB: 50})
    topic = room.send("m.room.topic", BOB, {"topic": "by bob"}, "")
    demoting, joining = fork(room), fork(room)
    demoting.send("m.room.power_levels", ALICE, {"users": {ALICE: 100}}, "")
    joining.member(DAVE, "join")

    resolved = await resolve(room, state_of(demoting), state_of(joining))
    assert resolved[TOPIC] == topic.event_id
    unconflicted, _ = separate([state_of(demoting), state_of(joining)])
    assert unconflicted[TOPIC] == topic.event_id
    for key, event_id in unconflicted.items():
        assert resolved[key] == event_id


@every_v2_version
@pytest_twisted.ensureDeferred
async def test_unconflicted_event_is_restored_over_an_auth_difference_event_of_its_key(rv):
    """Step 5. Both states hold Bob's first join; the first also holds an
    invite Bob sent after renaming himself, which brings the rename into the
    auth difference. The rename passes the iterative auth checks, and the
    unconflicted join must still be the answer."""
    room = standard_room(rv, members=[BOB], users={BOB: 50})
    first_join = room.state[member_key(BOB)]
    branch = fork(room)
    rename = branch.send("m.room.member", BOB, {"membership": "join", "displayname": "B"}, BOB)
    invite = branch.send("m.room.member", BOB, {"membership": "invite"}, CAROL)
    with_invite = state_of(room) | {member_key(CAROL): invite.event_id}

    store = InMemoryStateResolutionStore(room.events.values())
    difference = await store.get_auth_chain_difference(
        room.room_id, [set(with_invite.values()), set(state_of(room).values())]
    )
    assert difference == {invite.event_id, rename.event_id}

    resolved = await resolve(room, with_invite, state_of(room))
    assert resolved[member_key(BOB)] == first_join.event_id
    assert resolved[member_key(CAROL)] == invite.event_id


@every_v2_version
@pytest_twisted.ensureDeferred
async def test_states_without_conflicts_resolve_to_their_union(rv):
    room = standard_room(rv, members=[BOB])
    state = state_of(room)
    assert await resolve(room, state, dict(state)) == state
    assert await resolve(room, state) == state


@every_v2_version
@pytest_twisted.ensureDeferred
async def test_unpersisted_events_in_event_map_resolve_like_persisted_ones(rv):
    """Events only the caller has (event_map) give the same answer as the
    same events read from the store."""
    room = standard_room(rv, members=[BOB, CAROL], users={BOB: 50})
    persisted = dict(room.events)
    banning, demoting = fork(room), fork(room)
    banning.send("m.room.member", BOB, {"membership": "ban"}, CAROL)
    banning.send("m.room.topic", BOB, {"topic": "after the ban"}, "")
    demoting.send("m.room.power_levels", ALICE, {"users": {ALICE: 100}}, "")
    demoting.member(DAVE, "join")
    states = [state_of(banning), state_of(demoting)]
    unpersisted = {e: ev for e, ev in room.events.items() if e not in persisted}

    store = InMemoryStateResolutionStore(persisted.values())
    from_event_map = await resolve_events(room.room_id, rv, states, unpersisted, store)
    assert from_event_map == await resolve(room, *states)


def test_power_events_are_those_that_can_take_abilities_away():
    rv = V2_VERSIONS[-1]
    room = standard_room(rv, members=[BOB, CAROL], users={BOB: 50})
    assert is_power_event(room.state[PL])
    assert is_power_event(room.state[JR])
    assert is_power_event(room.build("m.room.member", ALICE, {"membership": "ban"}, BOB))
    assert is_power_event(room.build("m.room.member", ALICE, {"membership": "leave"}, BOB))
    # Leaving yourself, joining, topics: not power events.
    assert not is_power_event(room.build("m.room.member", BOB, {"membership": "leave"}, BOB))
    assert not is_power_event(room.state[member_key(BOB)])
    assert not is_power_event(room.build("m.room.topic", ALICE, {"topic": "t"}, ""))


@every_v2_version
def test_iterative_auth_checks_take_a_missing_key_from_the_events_auth_events(rv):
    """The state lacks the sender's membership: the event's own (not
    rejected) auth event for it is used; a rejected one is not."""
    room = standard_room(rv, members=[BOB], users={BOB: 50})
    topic = room.build("m.room.topic", BOB, {"topic": "t"}, "")
    state = state_of(room)
    del state[member_key(BOB)]
    events = dict(room.events)
    events[topic.event_id] = topic

    applied = iterative_auth_checks(rv, [topic.event_id], state, events)
    assert applied[TOPIC] == topic.event_id

    bob_join = room.state[member_key(BOB)]
    events[bob_join.event_id] = make_event_from_dict(
        bob_join.get_dict(), rv, rejected_reason="failed auth"
    )
    assert TOPIC not in iterative_auth_checks(rv, [topic.event_id], state, events)


@every_v2_version
def test_iterative_auth_checks_prefer_the_state_to_the_events_auth_events(rv):
    """The event's auth events say Bob may set the topic; the state built so
    far, where Bob has been demoted, says no."""
    room = standard_room(rv, members=[BOB], users={BOB: 50})
    topic = room.build("m.room.topic", BOB, {"topic": "t"}, "")
    demotion = room.send("m.room.power_levels", ALICE, {"users": {ALICE: 100}}, "")
    events = dict(room.events)
    events[topic.event_id] = topic
    state = state_of(room)
    assert state[PL] == demotion.event_id
    assert TOPIC not in iterative_auth_checks(rv, [topic.event_id], state, events)
