"""State resolution v1 (room version 1): rooms/v1 "State resolution"."""

from __future__ import annotations

import hashlib

import pytest_twisted

from atrium.events.room_versions import KNOWN_ROOM_VERSIONS
from atrium.state.v1 import separate
from tests.state.helpers import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    PL,
    TOPIC,
    fork,
    member_key,
    resolve,
    state_of,
)
from tests.support.events import RoomBuilder, standard_room

V1 = KNOWN_ROOM_VERSIONS["1"]


def filler(room: RoomBuilder, count: int = 1) -> None:
    """Messages, to push the fork's next state event deeper."""
    for _ in range(count):
        room.send("m.room.message", ALICE, {"body": "."})


@pytest_twisted.ensureDeferred
async def test_other_conflicts_pick_the_deepest_event_whatever_its_timestamp():
    room = standard_room(V1, members=[BOB], users={BOB: 50})
    shallow, deep = fork(room), fork(room)
    shallow.send("m.room.topic", ALICE, {"topic": "shallow"}, "", origin_server_ts=9_999_999)
    filler(deep)
    deeper = deep.send("m.room.topic", BOB, {"topic": "deep"}, "", origin_server_ts=1)
    assert await resolve(room, state_of(shallow), state_of(deep)) == state_of(deep)
    assert (await resolve(room, state_of(deep), state_of(shallow)))[TOPIC] == deeper.event_id


@pytest_twisted.ensureDeferred
async def test_other_conflicts_at_equal_depth_pick_the_lowest_sha1_of_the_event_id():
    room = standard_room(V1, members=[BOB], users={BOB: 50})
    first, second = fork(room), fork(room)
    a = first.send("m.room.topic", ALICE, {"topic": "a"}, "")
    b = second.send("m.room.topic", BOB, {"topic": "b"}, "")
    assert a.depth == b.depth
    expected = min((a, b), key=lambda e: hashlib.sha1(e.event_id.encode()).hexdigest())
    resolved = await resolve(room, state_of(first), state_of(second))
    assert resolved[TOPIC] == expected.event_id


@pytest_twisted.ensureDeferred
async def test_deepest_topic_is_skipped_when_its_sender_lost_power_in_the_power_levels_pass():
    room = standard_room(V1, members=[BOB], users={BOB: 50})
    old_topic = room.send("m.room.topic", ALICE, {"topic": "old"}, "")
    demoting, topic_fork = fork(room), fork(room)
    demotion = demoting.send("m.room.power_levels", ALICE, {"users": {ALICE: 100}}, "")
    filler(topic_fork)
    bobs_topic = topic_fork.send("m.room.topic", BOB, {"topic": "bob's"}, "")

    resolved = await resolve(room, state_of(demoting), state_of(topic_fork))
    assert resolved[PL] == demotion.event_id
    assert resolved[TOPIC] == old_topic.event_id

    control = await resolve(room, state_of(room), state_of(topic_fork))
    assert control[TOPIC] == bobs_topic.event_id


@pytest_twisted.ensureDeferred
async def test_power_levels_pass_stops_at_the_first_event_not_allowed():
    """Ascending depth: PL0, the demotion of Bob, Bob's change (now not
    allowed: stop), Alice's later change (allowed, but never reached)."""
    room = standard_room(V1, members=[BOB], users={BOB: 50})
    forks = [fork(room) for _ in range(3)]
    demotion = forks[0].send("m.room.power_levels", ALICE, {"users": {ALICE: 100}}, "")
    filler(forks[1])
    forks[1].send("m.room.power_levels", BOB, {"users": {ALICE: 100, BOB: 50, CAROL: 10}}, "")
    filler(forks[2], 2)
    forks[2].send("m.room.power_levels", ALICE, {"users": {ALICE: 100, BOB: 50, DAVE: 20}}, "")

    resolved = await resolve(room, *(state_of(f) for f in forks))
    assert resolved[PL] == demotion.event_id


@pytest_twisted.ensureDeferred
async def test_member_conflicts_are_authorised_against_the_resolved_power_levels():
    room = standard_room(V1, members=[BOB, CAROL], users={BOB: 50})
    banning, demoting = fork(room), fork(room)
    filler(banning)
    ban = banning.send("m.room.member", BOB, {"membership": "ban"}, CAROL)
    demoting.send("m.room.power_levels", ALICE, {"users": {ALICE: 100}}, "")

    resolved = await resolve(room, state_of(banning), state_of(demoting))
    assert resolved[member_key(CAROL)] == room.state[member_key(CAROL)].event_id

    control = await resolve(room, state_of(banning), state_of(room))
    assert control[member_key(CAROL)] == ban.event_id


def test_a_key_missing_from_some_states_is_not_a_v1_conflict():
    unconflicted, conflicted = separate(
        [{("a", ""): "$1", ("b", ""): "$2"}, {("a", ""): "$1", ("b", ""): "$3"}, {}]
    )
    assert unconflicted == {("a", ""): "$1"}
    assert conflicted == {("b", ""): {"$2", "$3"}}
