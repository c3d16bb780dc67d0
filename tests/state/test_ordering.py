"""The reverse topological power ordering and the mainline ordering
(rooms/v2 "State resolution", Definitions)."""

from __future__ import annotations

import math

import pytest
import pytest_twisted

from atrium.events.room_versions import KNOWN_ROOM_VERSIONS
from atrium.state.loader import EventLoader
from atrium.state.memory_store import InMemoryStateResolutionStore
from atrium.state.ordering import (
    MainlinePositions,
    mainline_order,
    reverse_topological_power_order,
    sender_power_level,
)
from tests.state.helpers import ALICE, BOB, CAROL, DAVE, PL, fork, member_key
from tests.support.events import RoomBuilder, standard_room

RV = KNOWN_ROOM_VERSIONS["10"]


def test_auth_events_come_first_whatever_the_power_of_their_sender():
    room = standard_room(RV, members=[CAROL])
    carol_join = room.state[member_key(CAROL)]
    kick = room.send("m.room.member", ALICE, {"membership": "leave"}, CAROL, origin_server_ts=1)
    events = dict(room.events)
    assert reverse_topological_power_order({kick.event_id, carol_join.event_id}, events) == [
        carol_join.event_id,
        kick.event_id,
    ]


def test_ready_events_go_by_power_then_timestamp_then_event_id():
    room = standard_room(RV, members=[BOB, CAROL, DAVE], users={BOB: 50, CAROL: 50, DAVE: 50})
    by_alice = room.build("m.room.topic", ALICE, {"topic": "a"}, "", origin_server_ts=9)
    by_bob = room.build("m.room.topic", BOB, {"topic": "b"}, "", origin_server_ts=5)
    by_carol = room.build("m.room.topic", CAROL, {"topic": "c"}, "", origin_server_ts=2)
    by_dave = room.build("m.room.topic", DAVE, {"topic": "d"}, "", origin_server_ts=2)
    events = dict(room.events)
    for e in (by_alice, by_bob, by_carol, by_dave):
        events[e.event_id] = e
    same_ts = sorted([by_carol.event_id, by_dave.event_id])
    assert reverse_topological_power_order(set(events) - set(room.events), events) == [
        by_alice.event_id,
        *same_ts,
        by_bob.event_id,
    ]


def test_power_is_read_from_each_events_own_auth_events():
    """Bob was promoted after Carol's event was sent: his event, citing the
    newer power levels, outranks hers despite its later timestamp."""
    room = standard_room(RV, members=[BOB, CAROL], users={CAROL: 20})
    by_carol = room.build("m.room.topic", CAROL, {"topic": "c"}, "", origin_server_ts=1)
    room.send("m.room.power_levels", ALICE, {"users": {ALICE: 100, CAROL: 20, BOB: 50}}, "")
    by_bob = room.build("m.room.topic", BOB, {"topic": "b"}, "", origin_server_ts=2)
    events = dict(room.events)
    events.update({by_carol.event_id: by_carol, by_bob.event_id: by_bob})
    assert sender_power_level(by_carol, events) == 20
    assert sender_power_level(by_bob, events) == 50
    assert reverse_topological_power_order({by_carol.event_id, by_bob.event_id}, events) == [
        by_bob.event_id,
        by_carol.event_id,
    ]


@pytest.mark.parametrize("version", ["10", "11"])
def test_creator_has_100_before_any_power_levels_event(version):
    """v11 has no `creator` in the create event: its sender is the creator."""
    rv = KNOWN_ROOM_VERSIONS[version]
    room = RoomBuilder(rv)
    room.create()
    creator_join = room.member(room.creator, "join")
    other = room.build("m.room.member", BOB, {"membership": "join"}, BOB)
    events = dict(room.events)
    assert sender_power_level(creator_join, events) == 100
    assert sender_power_level(other, events) == 0


def mainline_room() -> tuple[RoomBuilder, dict[str, str]]:
    """Power levels PL0 -> PL1 -> PL2 on the mainline, PLx forked off PL1,
    and a topic event based on each."""
    room = standard_room(RV)
    names = {"creator_join": room.state[member_key(ALICE)].event_id}
    names["PL0"] = room.state[PL].event_id
    names["T0"] = room.send("m.room.topic", ALICE, {"topic": "0"}, "", origin_server_ts=40).event_id
    names["PL1"] = room.send(
        "m.room.power_levels", ALICE, {"users": {ALICE: 100, BOB: 1}}, ""
    ).event_id
    side = fork(room)
    names["T1"] = room.send("m.room.topic", ALICE, {"topic": "1"}, "", origin_server_ts=30).event_id
    names["PL2"] = room.send(
        "m.room.power_levels", ALICE, {"users": {ALICE: 100, BOB: 2}}, ""
    ).event_id
    names["T2"] = room.send("m.room.topic", ALICE, {"topic": "2"}, "", origin_server_ts=10).event_id
    names["PLx"] = side.send(
        "m.room.power_levels", ALICE, {"users": {ALICE: 100, BOB: 3}}, ""
    ).event_id
    names["Tx"] = side.send("m.room.topic", ALICE, {"topic": "x"}, "", origin_server_ts=20).event_id
    return room, names


@pytest_twisted.ensureDeferred
async def test_mainline_positions_follow_the_power_levels_chain():
    room, n = mainline_room()
    loader = EventLoader(room.room_id, None, InMemoryStateResolutionStore(room.events.values()))
    positions = await MainlinePositions.build(n["PL2"], loader)
    events = [n["T0"], n["T1"], n["T2"], n["Tx"], n["creator_join"], n["PL2"]]
    await loader.load(events)
    await loader.load_auth_events_of(events)
    await positions.compute(events)
    got = {name: positions.of_event(n[name]) for name in ("T0", "T1", "T2", "Tx", "creator_join")}
    # Tx's power levels are off the mainline; the walk continues to PL1.
    assert got == {"T0": 2, "T1": 1, "T2": 0, "Tx": 1, "creator_join": math.inf}
    # The event itself is not part of its own walk.
    assert positions.of_event(n["PL2"]) == 1


@pytest_twisted.ensureDeferred
async def test_mainline_order_is_older_base_first_then_timestamp():
    room, n = mainline_room()
    loader = EventLoader(room.room_id, None, InMemoryStateResolutionStore(room.events.values()))
    events = [n["T2"], n["Tx"], n["T1"], n["T0"], n["creator_join"]]
    await loader.load(events)
    await loader.load_auth_events_of(events)
    ordered = await mainline_order(events, n["PL2"], loader)
    # T1 and Tx share position 1; Tx has the smaller timestamp.
    assert ordered == [n["creator_join"], n["T0"], n["Tx"], n["T1"], n["T2"]]


@pytest_twisted.ensureDeferred
async def test_mainline_order_without_power_levels_is_by_timestamp():
    room, n = mainline_room()
    loader = EventLoader(room.room_id, None, InMemoryStateResolutionStore(room.events.values()))
    events = [n["T0"], n["T1"], n["T2"], n["Tx"]]
    await loader.load(events)
    await loader.load_auth_events_of(events)
    assert await mainline_order(events, None, loader) == [n["T2"], n["Tx"], n["T1"], n["T0"]]
