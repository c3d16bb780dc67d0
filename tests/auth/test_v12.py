"""Room version 12 authorization rules (rooms/v12 "Authorisation rules"):
the room ID is the create event's ID, the create event has no room_id and is
never listed in auth_events, `additional_creators` is validated, and the
room creators have an infinite power level that power levels cannot mention.
"""

from __future__ import annotations

import math

import pytest

from atrium.auth.rules import (
    check_state_independent_auth_rules,
    get_user_power_level,
    selected_auth_types,
)
from atrium.crypto.event_hashing import compute_event_id
from atrium.events.event import make_event_from_dict
from atrium.events.room_versions import V11, V12
from tests.auth.helpers import ALICE, BOB, CAROL, MOD, check, is_allowed, rejection
from tests.support.events import RoomBuilder, make_pdu, standard_room

CREATE = ("m.room.create", "")


def _create_rejection(event) -> str:
    room = RoomBuilder(V12)
    room.add(event)
    return rejection(room, event)


def _v12_create(content=None, **kw):
    content = {"room_version": "12", **(content or {})}
    return make_pdu(
        V12,
        type="m.room.create",
        sender="@creator:example.org",
        content=content,
        state_key="",
        **kw,
    )


# -- the create event and the room ID ------------------------------------------------------


def test_room_id_is_the_create_event_id_with_the_room_sigil():
    room = RoomBuilder(V12)
    create = room.create()
    assert "room_id" not in create.get_pdu_json()
    assert create.event_id == compute_event_id(V12, create.get_pdu_json())
    assert create.room_id == "!" + create.event_id[1:]
    assert room.room_id == create.room_id
    check(room, create)


def test_create_event_with_a_room_id_is_rejected():
    event = _v12_create(extra={"room_id": "!room:example.org"})
    assert _create_rejection(event) == "m.room.create event has a room_id"


@pytest.mark.parametrize(
    "additional",
    [[], ["@bob:other.org"], ["@bob:other.org", "@carol:third.org"]],
)
def test_additional_creators_of_user_ids_are_allowed(additional):
    room = RoomBuilder(V12)
    create = room.add(_v12_create({"additional_creators": additional}))
    check(room, create)


@pytest.mark.parametrize(
    "additional",
    ["@bob:other.org", {"@bob:other.org": 1}, [1], ["bob"], ["@bob"], [None], ["@bob:bad host"]],
)
def test_malformed_additional_creators_are_rejected(additional):
    event = _v12_create({"additional_creators": additional})
    assert _create_rejection(event) == "m.room.create additional_creators is not a list of user IDs"


def test_additional_creators_are_not_checked_before_v12():
    room = RoomBuilder(V11)
    create = room.create({"room_version": "11", "additional_creators": "not a list"})
    check(room, create)


def test_events_do_not_list_the_create_event_but_depend_on_it():
    room = standard_room(V12, members=[BOB])
    message = room.build("m.room.message", BOB, {"body": "hi"})
    create_id = room.state[CREATE].event_id
    assert CREATE not in selected_auth_types(V12, message)
    assert create_id not in message.listed_auth_event_ids()
    # ... yet it is one of its auth events (auth chains, fetching, resolution).
    assert message.auth_event_ids()[0] == create_id
    check(room, message)


def test_listing_the_create_event_in_auth_events_is_rejected():
    room = standard_room(V12, members=[BOB])
    event = room.build("m.room.message", BOB, {"body": "hi"})
    listed = [room.state[CREATE].event_id, *event.listed_auth_event_ids()]
    event = room.build("m.room.message", BOB, {"body": "hi"}, auth_events=listed)
    assert rejection(room, event) == (
        "auth_events has a m.room.create event with state_key '' that this event does not need"
    )


def test_room_id_naming_an_unknown_event_is_rejected():
    room = standard_room(V12, members=[BOB])
    other = RoomBuilder(V12)
    other.create()
    event = room.build("m.room.message", BOB, {"body": "hi"}, room_id=other.room_id)
    assert rejection(room, event) == f"the room's create event ${other.room_id[1:]} is not known"


def test_room_id_naming_a_non_create_event_is_rejected():
    room = standard_room(V12, members=[BOB])
    pl = room.state[("m.room.power_levels", "")]
    event = room.build("m.room.message", BOB, {"body": "hi"}, room_id="!" + pl.event_id[1:])
    room.events[event.event_id] = event
    with pytest.raises(Exception) as err:
        check_state_independent_auth_rules(V12, event, room.events)
    assert "does not name an m.room.create event" in str(err.value)


def test_room_id_naming_a_rejected_create_event_is_rejected():
    room = standard_room(V12, members=[BOB])
    create = room.state[CREATE]
    room.events[create.event_id] = make_event_from_dict(
        create.get_dict(), V12, rejected_reason="auth_error"
    )
    event = room.build("m.room.message", BOB, {"body": "hi"})
    assert rejection(room, event) == f"the room's create event {create.event_id} was rejected"


# -- creators' power ----------------------------------------------------------------------


def test_creators_have_infinite_power_whatever_the_power_levels_say():
    room = RoomBuilder(V12)
    room.create({"room_version": "12", "additional_creators": [BOB]})
    assert get_user_power_level(room.creator, room.state) == math.inf
    room.member(room.creator, "join")
    room.send("m.room.power_levels", room.creator, {"users": {MOD: 100}, "users_default": 5}, "")
    assert get_user_power_level(room.creator, room.state) == math.inf
    assert get_user_power_level(BOB, room.state) == math.inf
    assert get_user_power_level(MOD, room.state) == 100
    assert get_user_power_level(CAROL, room.state) == 5


def test_creator_has_100_before_v12_and_infinite_from_v12_without_power_levels():
    for rv, level in ((V11, 100), (V12, math.inf)):
        room = RoomBuilder(rv)
        room.create()
        assert get_user_power_level(room.creator, room.state) == level


@pytest.mark.parametrize("listed", ["@creator:example.org", BOB])
def test_power_levels_may_not_list_a_creator(listed):
    room = RoomBuilder(V12)
    room.create({"room_version": "12", "additional_creators": [BOB]})
    room.member(room.creator, "join")
    event = room.build("m.room.power_levels", room.creator, {"users": {listed: 100}}, "")
    assert rejection(room, event) == (
        f"power levels 'users' lists room creator(s) {[listed]}, whose power level is infinite"
    )
    # Also when it is not the first power levels event of the room.
    room.send("m.room.power_levels", room.creator, {"users": {MOD: 50}}, "")
    event = room.build("m.room.power_levels", room.creator, {"users": {listed: 0}}, "")
    assert not is_allowed(room, event)


def test_a_user_at_a_high_level_cannot_kick_ban_or_outrank_the_creator():
    room = standard_room(V12, members=[MOD, ALICE], users={MOD: 2**53 - 1})
    for membership in ("leave", "ban"):
        event = room.build("m.room.member", MOD, {"membership": membership}, room.creator)
        assert not is_allowed(room, event), membership
    # The creator kicks anyone, and may grant up to any integer level.
    assert is_allowed(room, room.build("m.room.member", room.creator, {"membership": "ban"}, MOD))
    grant = room.build("m.room.power_levels", room.creator, {"users": {ALICE: 2**53 - 1}}, "")
    assert is_allowed(room, grant)


def test_additional_creator_joins_and_acts_with_infinite_power():
    room = RoomBuilder(V12)
    room.create({"room_version": "12", "additional_creators": [BOB]})
    room.member(room.creator, "join")
    room.send("m.room.power_levels", room.creator, {"users": {MOD: 100}}, "")
    room.send("m.room.join_rules", room.creator, {"join_rule": "public"}, "")
    room.member(BOB, "join")
    room.member(MOD, "join")
    kick = room.build("m.room.member", BOB, {"membership": "leave"}, MOD)
    assert is_allowed(room, kick)
    pl = room.build("m.room.power_levels", BOB, {"users": {}, "state_default": 1000}, "")
    assert is_allowed(room, pl)
