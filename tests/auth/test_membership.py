"""m.room.member rules (atrium.auth.membership): joins under each join rule,
invites, leaves and kicks, bans and unbans, knocks, restricted joins, and the
room versions in which each of them exists."""

from __future__ import annotations

import pytest

from tests.auth.helpers import (
    ALICE,
    BOB,
    CAROL,
    MOD,
    check,
    every_version,
    is_allowed,
    number,
    rejection,
    some_versions,
)
from tests.support.events import standard_room

# -- shape -----------------------------------------------------------------------


@every_version
def test_member_event_without_membership_is_rejected(rv):
    room = standard_room(rv)
    event = room.build("m.room.member", BOB, {"displayname": "Bob"}, BOB)
    assert rejection(room, event) == "m.room.member event has no membership in its content"


@every_version
def test_member_event_without_state_key_is_rejected(rv):
    room = standard_room(rv)
    event = room.build("m.room.member", BOB, {"membership": "join"})
    assert rejection(room, event) == "m.room.member event has no state_key"


@every_version
@pytest.mark.parametrize("membership", ["joined", "JOIN", 1, None])
def test_unknown_membership_is_rejected(rv, membership):
    room = standard_room(rv, members=[BOB])
    event = room.build("m.room.member", BOB, {"membership": membership}, BOB)
    assert rejection(room, event) == f"unknown membership {membership!r}"


# -- join ------------------------------------------------------------------------


@every_version
def test_anyone_may_join_a_public_room(rv):
    room = standard_room(rv)
    check(room, room.build("m.room.member", BOB, {"membership": "join"}, BOB))


@every_version
def test_joining_on_behalf_of_someone_else_is_rejected(rv):
    room = standard_room(rv)
    event = room.build("m.room.member", room.creator, {"membership": "join"}, BOB)
    assert rejection(room, event) == "sender cannot join on behalf of another user"


@every_version
@pytest.mark.parametrize("join_rule", ["public", "invite"])
def test_banned_user_cannot_join(rv, join_rule):
    room = standard_room(rv, join_rule=join_rule)
    room.member(BOB, "ban", sender=room.creator)
    event = room.build("m.room.member", BOB, {"membership": "join"}, BOB)
    assert rejection(room, event) == "sender is banned from the room"


@every_version
def test_joined_user_may_rejoin_to_change_profile(rv):
    room = standard_room(rv, join_rule="invite", members=[BOB])
    check(room, room.build("m.room.member", BOB, {"membership": "join", "displayname": "B"}, BOB))


@every_version
def test_invite_only_room_needs_an_invite(rv):
    room = standard_room(rv, join_rule="invite")
    event = room.build("m.room.member", BOB, {"membership": "join"}, BOB)
    assert rejection(room, event) == "join rule is invite and sender is not invited"
    room.member(BOB, "invite", sender=room.creator)
    check(room, room.build("m.room.member", BOB, {"membership": "join"}, BOB))


@every_version
def test_join_rules_event_absent_means_invite_only(rv):
    room = standard_room(rv)
    del room.state[("m.room.join_rules", "")]
    event = room.build("m.room.member", BOB, {"membership": "join"}, BOB)
    assert rejection(room, event) == "join rule is invite and sender is not invited"


@every_version
@pytest.mark.parametrize("join_rule", ["private", "nonsense"])
def test_unknown_join_rule_lets_nobody_join(rv, join_rule):
    room = standard_room(rv, join_rule=join_rule)
    room.member(BOB, "invite", sender=room.creator)
    event = room.build("m.room.member", BOB, {"membership": "join"}, BOB)
    assert rejection(room, event) == (
        f"join rule {join_rule!r} does not allow joining in room version {rv.identifier}"
    )


@every_version
def test_invited_user_may_join_a_knock_room_from_v7(rv):
    """Before v7 `knock` is not a join rule, so nobody can join at all."""
    room = standard_room(rv, join_rule="knock")
    room.member(BOB, "invite", sender=room.creator)
    event = room.build("m.room.member", BOB, {"membership": "join"}, BOB)
    if number(rv) >= 7:
        check(room, event)
    else:
        assert (
            rejection(room, event)
            == f"join rule 'knock' does not allow joining in room version {rv.identifier}"
        )


@some_versions(lambda n: n >= 7)
def test_uninvited_user_cannot_join_a_knock_room(rv):
    room = standard_room(rv, join_rule="knock")
    room.member(BOB, "knock")
    event = room.build("m.room.member", BOB, {"membership": "join"}, BOB)
    assert rejection(room, event) == "join rule is knock and sender is not invited"


# -- restricted joins (v8+) and knock_restricted (v10+) -------------------------------


def _restricted_join(room, user=BOB, authoriser=ALICE, signed_by=None):
    """A join naming ``authoriser``, signed by the joiner's and ``signed_by``'s servers."""
    signatures = {user.split(":", 1)[1]: {"ed25519:a": "sig"}}
    server = (signed_by or authoriser).split(":", 1)[1]
    signatures[server] = {"ed25519:b": "sig"}
    content = {"membership": "join", "join_authorised_via_users_server": authoriser}
    return room.build("m.room.member", user, content, user, signatures=signatures)


@every_version
@pytest.mark.parametrize("join_rule,since", [("restricted", 8), ("knock_restricted", 10)])
def test_restricted_join_authorised_by_a_joined_member_depends_on_version(rv, join_rule, since):
    room = standard_room(rv, join_rule=join_rule, members=[ALICE])
    event = _restricted_join(room)
    if number(rv) >= since:
        check(room, event)
    else:
        assert rejection(room, event) == (
            f"join rule {join_rule!r} does not allow joining in room version {rv.identifier}"
        )


@some_versions(lambda n: n >= 8)
def test_restricted_join_without_authoriser_is_rejected(rv):
    room = standard_room(rv, join_rule="restricted", members=[ALICE])
    event = room.build("m.room.member", BOB, {"membership": "join"}, BOB)
    assert (
        rejection(room, event)
        == "join to a restricted room without join_authorised_via_users_server"
    )


@some_versions(lambda n: n >= 8)
def test_restricted_join_authorised_by_a_non_member_is_rejected(rv):
    room = standard_room(rv, join_rule="restricted")
    event = _restricted_join(room, authoriser=ALICE)
    assert rejection(room, event) == f"authorising user {ALICE} is not joined to the room"


@some_versions(lambda n: n >= 8)
def test_restricted_join_authorised_by_a_user_who_cannot_invite_is_rejected(rv):
    room = standard_room(
        rv, join_rule="restricted", members=[ALICE], power_levels={"invite": 20}, users={ALICE: 10}
    )
    event = _restricted_join(room)
    assert (
        rejection(room, event)
        == f"authorising user {ALICE} has power level 10, below the invite level 20"
    )
    room.send(
        "m.room.power_levels",
        room.creator,
        {"users": {room.creator: 100, ALICE: 20}, "invite": 20},
        "",
    )
    check(room, _restricted_join(room))


@some_versions(lambda n: n >= 8)
def test_restricted_join_not_signed_by_the_authorising_server_is_rejected(rv):
    room = standard_room(rv, join_rule="restricted", members=[ALICE])
    event = _restricted_join(room, signed_by=CAROL)
    assert (
        rejection(room, event)
        == "event is not signed by example.org, the server of join_authorised_via_users_server"
    )


@some_versions(lambda n: n >= 8)
def test_authorising_server_signature_is_needed_even_when_invited(rv):
    """Rule 4.2 comes before the join rules: an invite does not excuse it."""
    room = standard_room(rv, join_rule="restricted", members=[ALICE])
    room.member(BOB, "invite", sender=room.creator)
    assert not is_allowed(room, _restricted_join(room, signed_by=CAROL))
    check(room, room.build("m.room.member", BOB, {"membership": "join"}, BOB))


@some_versions(lambda n: n >= 8)
def test_join_authorised_via_an_invalid_user_id_is_rejected(rv):
    room = standard_room(rv, join_rule="restricted", members=[ALICE])
    content = {"membership": "join", "join_authorised_via_users_server": "nobody"}
    event = room.build("m.room.member", BOB, content, BOB)
    assert (
        rejection(room, event)
        == "join_authorised_via_users_server is not a valid user ID: 'nobody'"
    )


@some_versions(lambda n: n <= 7)
def test_join_authorised_via_users_server_is_ignored_before_v8(rv):
    room = standard_room(rv, members=[ALICE])
    check(room, _restricted_join(room, signed_by=CAROL))


@some_versions(lambda n: n >= 8)
def test_invited_user_may_join_a_restricted_room_without_authoriser(rv):
    room = standard_room(rv, join_rule="restricted")
    room.member(BOB, "invite", sender=room.creator)
    check(room, room.build("m.room.member", BOB, {"membership": "join"}, BOB))


@some_versions(lambda n: n >= 8)
def test_banned_user_cannot_join_a_restricted_room_even_when_authorised(rv):
    room = standard_room(rv, join_rule="restricted", members=[ALICE])
    room.member(BOB, "ban", sender=room.creator)
    assert rejection(room, _restricted_join(room)) == "sender is banned from the room"


@some_versions(lambda n: n >= 8)
def test_authorising_server_signature_applies_to_any_membership(rv):
    room = standard_room(rv, members=[BOB])
    content = {"membership": "leave", "join_authorised_via_users_server": CAROL}
    event = room.build("m.room.member", BOB, content, BOB)
    assert (
        rejection(room, event)
        == "event is not signed by third.org, the server of join_authorised_via_users_server"
    )


# -- invite ----------------------------------------------------------------------------


@every_version
def test_member_may_invite(rv):
    room = standard_room(rv, join_rule="invite", members=[ALICE])
    check(room, room.build("m.room.member", ALICE, {"membership": "invite"}, BOB))


@every_version
@pytest.mark.parametrize("membership", [None, "invite", "leave"])
def test_non_member_cannot_invite(rv, membership):
    room = standard_room(rv, join_rule="invite")
    if membership is not None:
        room.member(ALICE, membership, sender=room.creator if membership == "invite" else ALICE)
    event = room.build("m.room.member", ALICE, {"membership": "invite"}, BOB)
    assert rejection(room, event) == "sender is not joined to the room"


@every_version
def test_inviting_a_joined_user_is_rejected(rv):
    room = standard_room(rv, members=[BOB])
    event = room.build("m.room.member", room.creator, {"membership": "invite"}, BOB)
    assert rejection(room, event) == "target user is already joined to the room"


@every_version
def test_inviting_a_banned_user_is_rejected(rv):
    room = standard_room(rv)
    room.member(BOB, "ban", sender=room.creator)
    event = room.build("m.room.member", room.creator, {"membership": "invite"}, BOB)
    assert rejection(room, event) == "target user is banned from the room"


@every_version
@pytest.mark.parametrize("previous", ["invite", "leave"])
def test_reinviting_an_invited_or_departed_user_is_allowed(rv, previous):
    room = standard_room(rv, join_rule="invite")
    room.member(BOB, previous, sender=room.creator if previous == "invite" else BOB)
    check(room, room.build("m.room.member", room.creator, {"membership": "invite"}, BOB))


@every_version
@pytest.mark.parametrize("level,allowed", [(9, False), (10, True), (11, True)])
def test_invite_needs_the_invite_level(rv, level, allowed):
    room = standard_room(rv, members=[ALICE], users={ALICE: level}, power_levels={"invite": 10})
    event = room.build("m.room.member", ALICE, {"membership": "invite"}, BOB)
    assert is_allowed(room, event) == allowed
    if not allowed:
        assert (
            rejection(room, event) == f"sender's power level {level} is below the invite level 10"
        )


@every_version
def test_invite_level_defaults_to_zero(rv):
    room = standard_room(rv, members=[ALICE], power_levels={"users_default": 0})
    check(room, room.build("m.room.member", ALICE, {"membership": "invite"}, BOB))


# -- leave and kick ----------------------------------------------------------------------


@every_version
@pytest.mark.parametrize("previous", ["join", "invite"])
def test_user_may_leave_or_reject_an_invite(rv, previous):
    room = standard_room(rv, join_rule="invite")
    room.member(BOB, previous, sender=room.creator if previous == "invite" else BOB)
    check(room, room.build("m.room.member", BOB, {"membership": "leave"}, BOB))


@every_version
def test_knock_may_be_retracted_from_v7(rv):
    room = standard_room(rv, join_rule="knock")
    room.member(BOB, "knock")
    event = room.build("m.room.member", BOB, {"membership": "leave"}, BOB)
    if number(rv) >= 7:
        check(room, event)
    else:
        assert rejection(room, event) == "sender cannot leave with current membership knock"


@every_version
@pytest.mark.parametrize("previous", [None, "leave", "ban"])
def test_leaving_without_being_in_the_room_is_rejected(rv, previous):
    room = standard_room(rv)
    if previous is not None:
        room.member(BOB, previous, sender=room.creator if previous == "ban" else BOB)
    event = room.build("m.room.member", BOB, {"membership": "leave"}, BOB)
    assert (
        rejection(room, event)
        == f"sender cannot leave with current membership {previous or 'leave'}"
    )


@every_version
@pytest.mark.parametrize(
    "sender_level,target_level,kick,allowed,reason",
    [
        (50, 0, 50, True, None),
        (50, 49, 50, True, None),
        (49, 0, 50, False, "sender's power level 49 is below the kick level 50"),
        (
            50,
            50,
            50,
            False,
            "target user's power level 50 is not below the sender's power level 50",
        ),
        (
            50,
            60,
            50,
            False,
            "target user's power level 60 is not below the sender's power level 50",
        ),
        (10, 0, 10, True, None),
        (0, -5, 0, True, None),
    ],
)
def test_kick(rv, sender_level, target_level, kick, allowed, reason):
    room = standard_room(
        rv,
        members=[MOD, BOB],
        users={MOD: sender_level, BOB: target_level},
        power_levels={"kick": kick},
    )
    event = room.build("m.room.member", MOD, {"membership": "leave"}, BOB)
    assert is_allowed(room, event) == allowed
    if reason:
        assert rejection(room, event) == reason


@every_version
def test_kick_level_defaults_to_50(rv):
    room = standard_room(rv, members=[MOD, BOB], users={MOD: 49})
    event = room.build("m.room.member", MOD, {"membership": "leave"}, BOB)
    assert rejection(room, event) == "sender's power level 49 is below the kick level 50"


@every_version
def test_kicker_must_be_joined(rv):
    room = standard_room(rv, members=[BOB], users={MOD: 100})
    event = room.build("m.room.member", MOD, {"membership": "leave"}, BOB)
    assert rejection(room, event) == "sender is not joined to the room"


@every_version
def test_revoking_an_invite_needs_the_kick_level(rv):
    room = standard_room(rv, join_rule="invite", members=[ALICE])
    room.member(BOB, "invite", sender=ALICE)
    event = room.build("m.room.member", ALICE, {"membership": "leave"}, BOB)
    assert rejection(room, event) == "sender's power level 0 is below the kick level 50"
    check(room, room.build("m.room.member", room.creator, {"membership": "leave"}, BOB))


@every_version
@pytest.mark.parametrize(
    "sender_level,kick,ban,allowed,reason",
    [
        (50, 50, 50, True, None),
        (60, 50, 70, False, "sender's power level 60 is below the ban level 70 needed to unban"),
        (60, 70, 50, False, "sender's power level 60 is below the kick level 70"),
        (70, 70, 70, True, None),
    ],
)
def test_unban_needs_both_kick_and_ban_levels(rv, sender_level, kick, ban, allowed, reason):
    room = standard_room(
        rv, members=[MOD], users={MOD: sender_level}, power_levels={"kick": kick, "ban": ban}
    )
    room.member(BOB, "ban", sender=room.creator)
    event = room.build("m.room.member", MOD, {"membership": "leave"}, BOB)
    assert is_allowed(room, event) == allowed
    if reason:
        assert rejection(room, event) == reason


# -- ban ---------------------------------------------------------------------------------


@every_version
@pytest.mark.parametrize(
    "sender_level,target_level,ban,allowed,reason",
    [
        (50, 0, 50, True, None),
        (49, 0, 50, False, "sender's power level 49 is below the ban level 50"),
        (
            50,
            50,
            50,
            False,
            "target user's power level 50 is not below the sender's power level 50",
        ),
        (100, 99, 100, True, None),
    ],
)
def test_ban(rv, sender_level, target_level, ban, allowed, reason):
    room = standard_room(
        rv,
        members=[MOD, BOB],
        users={MOD: sender_level, BOB: target_level},
        power_levels={"ban": ban},
    )
    event = room.build("m.room.member", MOD, {"membership": "ban"}, BOB)
    assert is_allowed(room, event) == allowed
    if reason:
        assert rejection(room, event) == reason


@every_version
def test_user_who_never_joined_may_be_banned(rv):
    room = standard_room(rv)
    check(room, room.build("m.room.member", room.creator, {"membership": "ban"}, BOB))


@every_version
def test_banner_must_be_joined(rv):
    room = standard_room(rv, members=[BOB], users={MOD: 100})
    event = room.build("m.room.member", MOD, {"membership": "ban"}, BOB)
    assert rejection(room, event) == "sender is not joined to the room"


@every_version
def test_self_ban_is_refused_because_own_level_is_not_below_own_level(rv):
    room = standard_room(rv, members=[MOD], users={MOD: 50})
    event = room.build("m.room.member", MOD, {"membership": "ban"}, MOD)
    assert (
        rejection(room, event)
        == "target user's power level 50 is not below the sender's power level 50"
    )


# -- knock (v7+) -------------------------------------------------------------------------


@every_version
def test_knock_exists_from_v7(rv):
    room = standard_room(rv, join_rule="knock")
    event = room.build("m.room.member", BOB, {"membership": "knock"}, BOB)
    if number(rv) >= 7:
        check(room, event)
    else:
        assert (
            rejection(room, event) == f"knocking is not supported in room version {rv.identifier}"
        )


@every_version
def test_knock_on_a_knock_restricted_room_from_v10(rv):
    room = standard_room(rv, join_rule="knock_restricted")
    event = room.build("m.room.member", BOB, {"membership": "knock"}, BOB)
    if number(rv) >= 10:
        check(room, event)
    elif number(rv) >= 7:
        assert rejection(room, event) == (
            f"join rule 'knock_restricted' does not allow knocking in room version {rv.identifier}"
        )
    else:
        assert (
            rejection(room, event) == f"knocking is not supported in room version {rv.identifier}"
        )


@some_versions(lambda n: n >= 7)
@pytest.mark.parametrize("join_rule", ["public", "invite", "restricted"])
def test_knock_needs_a_knock_join_rule(rv, join_rule):
    room = standard_room(rv, join_rule=join_rule)
    event = room.build("m.room.member", BOB, {"membership": "knock"}, BOB)
    assert (
        rejection(room, event)
        == f"join rule {join_rule!r} does not allow knocking in room version {rv.identifier}"
    )


@some_versions(lambda n: n >= 7)
def test_knocking_for_someone_else_is_rejected(rv):
    room = standard_room(rv, join_rule="knock", members=[ALICE])
    event = room.build("m.room.member", ALICE, {"membership": "knock"}, BOB)
    assert rejection(room, event) == "sender cannot knock on behalf of another user"


@some_versions(lambda n: n >= 7)
@pytest.mark.parametrize("previous", ["ban", "invite", "join"])
def test_banned_invited_or_joined_user_cannot_knock(rv, previous):
    room = standard_room(rv, join_rule="knock")
    room.member(BOB, previous, sender=room.creator if previous != "join" else BOB)
    event = room.build("m.room.member", BOB, {"membership": "knock"}, BOB)
    assert rejection(room, event) == f"sender cannot knock with current membership {previous}"


@some_versions(lambda n: n >= 7)
@pytest.mark.parametrize("previous", ["leave", "knock"])
def test_departed_or_knocking_user_may_knock_again(rv, previous):
    room = standard_room(rv, join_rule="knock")
    room.member(BOB, previous)
    check(room, room.build("m.room.member", BOB, {"membership": "knock"}, BOB))


@some_versions(lambda n: n >= 7)
def test_knock_may_be_accepted_with_an_invite(rv):
    room = standard_room(rv, join_rule="knock")
    room.member(BOB, "knock")
    check(room, room.build("m.room.member", room.creator, {"membership": "invite"}, BOB))
