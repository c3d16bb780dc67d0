"""atrium.auth.power_levels: reading levels (strings in v1-9, floats in v1-5,
integers only in v10+), the level helpers others call, and the rules for
changing m.room.power_levels (notifications guarded from v6)."""

from __future__ import annotations

import math

import pytest

from atrium.auth.power_levels import parse_power_level
from atrium.auth.rules import get_named_level, get_send_level, get_user_power_level
from atrium.events.room_versions import KNOWN_ROOM_VERSIONS
from tests.auth.helpers import (
    ALICE,
    BOB,
    MOD,
    check,
    every_version,
    is_allowed,
    number,
    rejection,
    some_versions,
)
from tests.support.events import RoomBuilder, make_pdu, standard_room

V = KNOWN_ROOM_VERSIONS
# These tests are about rooms whose creator has an ordinary level (listed in
# `users`, 100 without power levels): rooms 1-11. The v12 creators (infinite
# level, never listed) are tested in tests/auth/test_v12.py.
every_version = some_versions(lambda n: n <= 11)  # noqa: F811

# -- parsing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,expected_v5,expected_v9,expected_v10",
    [
        (50, 50, 50, 50),
        (-3, -3, -3, -3),
        ("50", 50, 50, None),
        (" +050 ", 50, 50, None),
        ("-7", -7, -7, None),
        ("\t12\n", 12, 12, None),
        ("5.0", None, None, None),
        ("1_000", None, None, None),
        ("\u0663", None, None, None),  # ARABIC-INDIC DIGIT THREE: int() would take it
        ("\u00a012", None, None, None),  # only ASCII whitespace surrounds the digits
        ("", None, None, None),
        ("+", None, None, None),
        (50.9, 50, None, None),
        (-50.9, -50, None, None),
        (5.114698e4, 51146, None, None),
        (math.inf, None, None, None),
        (math.nan, None, None, None),
        (True, None, None, None),
        (None, None, None, None),
        ([50], None, None, None),
    ],
)
def test_parse_power_level_per_version(value, expected_v5, expected_v9, expected_v10):
    assert parse_power_level(value, V["5"]) == expected_v5
    assert parse_power_level(value, V["9"]) == expected_v9
    assert parse_power_level(value, V["10"]) == expected_v10


def test_floats_are_accepted_up_to_v5_and_strings_up_to_v9():
    assert [parse_power_level(1.5, rv) for rv in V.values()] == [1] * 5 + [None] * 7
    assert [parse_power_level("1", rv) for rv in V.values()] == [1] * 9 + [None] * 3


# -- helpers: user level, named levels, send level --------------------------------------


@every_version
def test_user_level_comes_from_users_then_users_default(rv):
    room = standard_room(rv, users={BOB: 30}, power_levels={"users_default": 5})
    assert get_user_power_level(BOB, room.state) == 30
    assert get_user_power_level(ALICE, room.state) == 5
    assert get_user_power_level(room.creator, room.state) == 100


@every_version
def test_user_level_defaults_to_zero(rv):
    room = standard_room(rv)
    assert get_user_power_level(BOB, room.state) == 0


@every_version
def test_without_power_levels_the_creator_has_100(rv):
    room = RoomBuilder(rv)
    room.create()
    assert get_user_power_level(room.creator, room.state) == 100
    assert get_user_power_level(BOB, room.state) == 0
    assert get_user_power_level(BOB, {}) == 0


@every_version
def test_creator_without_power_levels_is_the_sender_in_v11(rv):
    """content.creator names the creator up to v10; v11 ignores it."""
    room = RoomBuilder(rv)
    room.create({"creator": BOB, "room_version": rv.identifier})
    expected = (0, 100) if number(rv) >= 11 else (100, 0)
    assert (
        get_user_power_level(BOB, room.state),
        get_user_power_level(room.creator, room.state),
    ) == expected


@some_versions(lambda n: n <= 9)
def test_string_levels_are_read_as_integers_before_v10(rv):
    room = standard_room(
        rv,
        users={BOB: "30"},
        power_levels={"users_default": " 7", "ban": "+60", "events": {"m.room.topic": "020"}},
    )
    assert get_user_power_level(BOB, room.state) == 30
    assert get_user_power_level(ALICE, room.state) == 7
    assert get_named_level(room.state, "ban", 50) == 60
    assert get_send_level("m.room.topic", "", room.state[("m.room.power_levels", "")]) == 20


@every_version
def test_named_levels_fall_back_to_the_given_default(rv):
    room = standard_room(rv, power_levels={"kick": 10})
    assert get_named_level(room.state, "kick", 50) == 10
    assert get_named_level(room.state, "ban", 50) == 50
    assert get_named_level({}, "invite", 0) == 0


@every_version
@pytest.mark.parametrize(
    "content,etype,state_key,expected",
    [
        ({}, "m.room.message", None, 0),
        ({}, "m.room.topic", "", 50),
        ({"events_default": 5, "state_default": 70}, "m.room.message", None, 5),
        ({"events_default": 5, "state_default": 70}, "m.room.topic", "", 70),
        ({"events": {"m.room.topic": 1}, "state_default": 70}, "m.room.topic", "", 1),
        ({"events": {"m.room.topic": 1}, "events_default": 30}, "m.room.topic", None, 1),
        ({"events": {"m.room.topic": 1}, "events_default": 30}, "m.room.message", None, 30),
    ],
)
def test_send_level(rv, content, etype, state_key, expected):
    pl = make_pdu(
        rv, type="m.room.power_levels", sender="@c:example.org", content=content, state_key=""
    )
    assert get_send_level(etype, state_key, pl) == expected


def test_send_level_without_power_levels_event():
    assert get_send_level("m.room.message", None, None) == 0
    assert get_send_level("m.room.topic", "", None) == 50


# -- shape of a new power levels event -----------------------------------------------


def _set_levels(rv, content, users=None, power_levels=None):
    """A room with creator 100 and MOD 50, and MOD sending ``content``."""
    room = standard_room(
        rv, members=[MOD, BOB], users={MOD: 50, **(users or {})}, power_levels=power_levels
    )
    return room, room.build("m.room.power_levels", MOD, content, "")


def _creator_sets(rv, content):
    room = standard_room(rv, members=[BOB])
    return room, room.build(
        "m.room.power_levels", room.creator, {"users": {room.creator: 100}, **content}, ""
    )


@every_version
@pytest.mark.parametrize(
    "key", ["users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"]
)
def test_string_top_level_values_are_rejected_from_v10(rv, key):
    room, event = _creator_sets(rv, {key: "50"})
    if number(rv) >= 10:
        assert rejection(room, event) == f"power level '{key}' is not an integer: '50'"
    else:
        check(room, event)


@every_version
@pytest.mark.parametrize("key", ["events", "notifications"])
def test_string_values_in_events_and_notifications_are_rejected_from_v10(rv, key):
    room, event = _creator_sets(rv, {key: {"m.room.topic": "50"}})
    if number(rv) >= 10:
        assert rejection(room, event) == f"power level '{key}.m.room.topic' is not an integer: '50'"
    else:
        check(room, event)


@every_version
@pytest.mark.parametrize("key", ["events", "notifications"])
def test_events_and_notifications_must_be_objects_from_v10(rv, key):
    room, event = _creator_sets(rv, {key: ["m.room.topic"]})
    if number(rv) >= 10:
        assert rejection(room, event) == f"power levels '{key}' is not an object"
    else:
        check(room, event)


@every_version
def test_string_user_levels_are_rejected_from_v10(rv):
    room, event = _creator_sets(rv, {"users": {"@creator:example.org": 100, BOB: "10"}})
    if number(rv) >= 10:
        assert rejection(room, event) == f"power level of {BOB} is not an integer: '10'"
    else:
        check(room, event)


@every_version
def test_float_user_levels_are_accepted_up_to_v5(rv):
    room, event = _creator_sets(rv, {"users": {"@creator:example.org": 100, BOB: 50.57}})
    if number(rv) <= 5:
        check(room, event)
    else:
        assert rejection(room, event) == f"power level of {BOB} is not an integer: 50.57"


@every_version
@pytest.mark.parametrize("level", ["ten", "10.5", True, None, {"x": 1}])
def test_user_level_that_is_no_integer_is_rejected(rv, level):
    room, event = _creator_sets(rv, {"users": {"@creator:example.org": 100, BOB: level}})
    assert rejection(room, event) == f"power level of {BOB} is not an integer: {level!r}"


@every_version
@pytest.mark.parametrize("user_id", ["bob", "@bob", "#room:example.org", "@bob:"])
def test_users_keys_must_be_user_ids(rv, user_id):
    room, event = _creator_sets(rv, {"users": {"@creator:example.org": 100, user_id: 0}})
    assert rejection(room, event) == f"power levels 'users' has an invalid user ID {user_id!r}"


@every_version
def test_users_must_be_an_object(rv):
    room = standard_room(rv)
    event = room.build("m.room.power_levels", room.creator, {"users": [room.creator]}, "")
    assert rejection(room, event) == "power levels 'users' is not an object"


@every_version
def test_first_power_levels_event_may_set_anything(rv):
    room = RoomBuilder(rv)
    room.create()
    room.member(room.creator, "join")
    content = {"users": {room.creator: 100, BOB: 1000}, "ban": 9000, "events": {"m.room.name": 500}}
    check(room, room.build("m.room.power_levels", room.creator, content, ""))


@every_version
def test_first_power_levels_event_still_needs_the_state_default(rv):
    room = RoomBuilder(rv)
    room.create()
    room.member(room.creator, "join")
    room.send("m.room.join_rules", room.creator, {"join_rule": "public"}, "")
    room.member(BOB, "join")
    event = room.build("m.room.power_levels", BOB, {"users": {BOB: 100}}, "")
    assert (
        rejection(room, event)
        == "sender's power level 0 is below the 50 required to send m.room.power_levels"
    )


# -- changes -----------------------------------------------------------------------------


CREATOR = "@creator:example.org"


@every_version
@pytest.mark.parametrize(
    "before,after,allowed",
    [
        ({"ban": 50}, {"ban": 40}, True),  # lowering a level the sender holds
        ({}, {"ban": 50}, True),  # adding one at the sender's level
        ({}, {"ban": 51}, False),  # adding one above it
        ({"ban": 50}, {"ban": 60}, False),  # raising above the sender
        ({"redact": 75}, {"redact": 10}, False),  # changing one above the sender
        ({"redact": 75}, {}, False),  # removing one above the sender
        ({"invite": 30}, {}, True),  # removing one below the sender
        ({"state_default": 60}, {"state_default": 60, "kick": 0}, False),  # cannot send PL at all
    ],
)
def test_changing_top_level_levels(rv, before, after, allowed):
    room, event = _set_levels(rv, {"users": {CREATOR: 100, MOD: 50}, **after}, power_levels=before)
    assert is_allowed(room, event) == allowed


@every_version
def test_top_level_rejection_reasons(rv):
    room, event = _set_levels(rv, {"users": {CREATOR: 100, MOD: 50}, "ban": 60})
    assert rejection(room, event) == "sender's power level 50 is below the new value 60 of 'ban'"
    room, event = _set_levels(rv, {"users": {CREATOR: 100, MOD: 50}}, power_levels={"redact": 75})
    assert (
        rejection(room, event)
        == "sender's power level 50 is below the current value 75 of 'redact', so cannot change it"
    )


@every_version
@pytest.mark.parametrize(
    "before,after,allowed,reason",
    [
        ({}, {"m.room.topic": 50}, True, None),
        (
            {},
            {"m.room.topic": 60},
            False,
            "sender's power level 50 is below the new value 60 of 'events.m.room.topic'",
        ),
        (
            {"m.room.topic": 100},
            {"m.room.topic": 10},
            False,
            "sender's power level 50 is below the current value 100 of 'events.m.room.topic', so cannot change it",
        ),
        (
            {"m.room.topic": 100},
            {},
            False,
            "sender's power level 50 is below the current value 100 of 'events.m.room.topic', so cannot change it",
        ),
        ({"m.room.topic": 100}, {"m.room.topic": 100, "m.room.name": 0}, True, None),
        ({"m.room.topic": 20}, {"m.room.topic": 40}, True, None),
    ],
)
def test_changing_event_levels(rv, before, after, allowed, reason):
    room, event = _set_levels(
        rv, {"users": {CREATOR: 100, MOD: 50}, "events": after}, power_levels={"events": before}
    )
    assert is_allowed(room, event) == allowed
    if reason:
        assert rejection(room, event) == reason


@every_version
@pytest.mark.parametrize(
    "before,after",
    [
        ({"room": 100}, {"room": 10}),  # changing one above the sender
        ({"room": 100}, {}),  # removing one above the sender
        ({}, {"room": 75}),  # adding one above the sender
        ({"room": 0}, {"room": 75}),  # raising one above the sender
    ],
)
def test_notification_levels_are_guarded_from_v6(rv, before, after):
    room, event = _set_levels(
        rv,
        {"users": {CREATOR: 100, MOD: 50}, "notifications": after},
        power_levels={"notifications": before},
    )
    if number(rv) >= 6:
        assert rejection(room, event).startswith("sender's power level 50 is below the ")
        assert "'notifications.room'" in rejection(room, event)
    else:
        check(room, event)


@some_versions(lambda n: 6 <= n <= 11)
def test_notification_levels_within_the_senders_level_may_change(rv):
    room, event = _set_levels(
        rv,
        {"users": {CREATOR: 100, MOD: 50}, "notifications": {"room": 50}},
        power_levels={"notifications": {"room": 20}},
    )
    check(room, event)


@every_version
@pytest.mark.parametrize(
    "users_after,allowed,reason",
    [
        ({CREATOR: 100, MOD: 50, BOB: 50}, True, None),  # promote up to own level
        (
            {CREATOR: 100, MOD: 50, BOB: 51},
            False,
            f"sender's power level 50 is below the new power level 51 of {BOB}",
        ),
        ({CREATOR: 100, MOD: 10}, True, None),  # demote self
        ({CREATOR: 100}, True, None),  # remove own entry
        (
            {CREATOR: 100, MOD: 60},
            False,
            f"sender's power level 50 is below the new power level 60 of {MOD}",
        ),
        (
            {CREATOR: 50, MOD: 50},
            False,
            f"sender's power level 50 is not above the power level 100 of {CREATOR}, so cannot change it",
        ),
        (
            {MOD: 50},
            False,
            f"sender's power level 50 is not above the power level 100 of {CREATOR}, so cannot change it",
        ),
        ({CREATOR: 100, MOD: 50, ALICE: 49}, True, None),  # demote a lower user
        ({CREATOR: 100, MOD: 50, ALICE: 50}, True, None),
        ({CREATOR: 100, MOD: 50}, True, None),  # remove a lower user
    ],
)
def test_changing_user_levels(rv, users_after, allowed, reason):
    room, event = _set_levels(rv, {"users": users_after}, users={ALICE: 20})
    assert is_allowed(room, event) == allowed
    if reason:
        assert rejection(room, event) == reason


@every_version
def test_user_at_the_same_level_cannot_be_demoted(rv):
    room, event = _set_levels(rv, {"users": {CREATOR: 100, MOD: 50, ALICE: 0}}, users={ALICE: 50})
    assert (
        rejection(room, event)
        == f"sender's power level 50 is not above the power level 50 of {ALICE}, so cannot change it"
    )


@some_versions(lambda n: n <= 9)
def test_rewriting_a_string_level_as_the_same_integer_is_no_change(rv):
    """Before v10 "100" and 100 are one level: MOD (50) may normalise it."""
    room, event = _set_levels(
        rv,
        {"users": {CREATOR: 100, MOD: 50}, "ban": 100, "events": {"m.room.name": 100}},
        power_levels={"ban": "100", "events": {"m.room.name": "0100"}},
    )
    check(room, event)


@every_version
def test_unchanged_high_levels_do_not_block_other_changes(rv):
    room, event = _set_levels(
        rv,
        {"users": {CREATOR: 100, MOD: 50, BOB: 10}, "ban": 100, "events": {"m.room.name": 100}},
        power_levels={"ban": 100, "events": {"m.room.name": 100}},
    )
    check(room, event)
