"""Rules of atrium.auth.rules outside membership and power level changes:
create event, auth events selection and shape, m.federate, the v1-5
m.room.aliases special case, "sender must be joined", required power
levels, '@' state keys, m.room.third_party_invite and the v1-2 redaction
rule; plus the split between the state independent and dependent halves.
"""

from __future__ import annotations

import pytest

from atrium.auth.rules import (
    AuthError,
    auth_types_for_event,
    check_auth_rules_for_event,
    check_state_dependent_auth_rules,
    check_state_independent_auth_rules,
)
from atrium.events.event import make_event_from_dict
from tests.auth.helpers import (
    ALICE,
    BOB,
    check,
    every_version,
    is_allowed,
    number,
    rejection,
    some_versions,
)
from tests.support.events import ROOM_ID, RoomBuilder, make_pdu, standard_room

# -- a whole room -------------------------------------------------------------


@every_version
def test_every_event_of_a_freshly_created_room_passes_auth(rv):
    room = standard_room(rv, members=[BOB, ALICE])
    for event in room.events.values():
        check(room, event)


@every_version
def test_every_event_of_an_invite_only_room_passes_auth(rv):
    room = standard_room(rv, join_rule="invite", members=[BOB])
    for event in room.events.values():
        check(room, event)


# -- rule 1: m.room.create ----------------------------------------------------


def _create(rv, content=None, sender="@creator:example.org", room_id=ROOM_ID, prev_events=()):
    if content is None:
        content = {"room_version": rv.identifier}
        if number(rv) < 11:
            content["creator"] = sender
    return make_pdu(
        rv,
        type="m.room.create",
        sender=sender,
        content=content,
        state_key="",
        room_id=room_id,
        prev_events=prev_events,
    )


def _create_rejection(rv, event) -> str:
    with pytest.raises(AuthError) as err:
        check_auth_rules_for_event(rv, event, {})
    return err.value.reason


@every_version
def test_create_event_with_the_right_content_is_allowed(rv):
    check_auth_rules_for_event(rv, _create(rv), {})


@every_version
def test_create_event_with_prev_events_is_rejected(rv):
    event = _create(rv, prev_events=["$earlier:example.org" if number(rv) < 3 else "$earlier"])
    assert _create_rejection(rv, event) == "m.room.create event has prev_events"


@some_versions(lambda n: n <= 11)  # v12 room IDs have no server name
def test_create_event_from_a_server_other_than_the_room_ids_is_rejected(rv):
    event = _create(rv, sender="@creator:elsewhere.org")
    assert (
        _create_rejection(rv, event)
        == "m.room.create sender's domain does not match the room ID's domain"
    )


@every_version
@pytest.mark.parametrize("room_version", ["foo", 11, "12x"])
def test_create_event_naming_an_unknown_room_version_is_rejected(rv, room_version):
    content = {"room_version": room_version, "creator": "@creator:example.org"}
    assert (
        _create_rejection(rv, _create(rv, content))
        == f"m.room.create has an unknown room_version {room_version!r}"
    )


@every_version
def test_create_event_without_room_version_is_allowed(rv):
    check_auth_rules_for_event(rv, _create(rv, {"creator": "@creator:example.org"}), {})


@every_version
def test_create_event_needs_creator_before_v11_only(rv):
    event = _create(rv, {"room_version": rv.identifier})
    assert is_allowed_create(rv, event) == (number(rv) >= 11)
    if number(rv) < 11:
        assert _create_rejection(rv, event) == "m.room.create has no creator"


def is_allowed_create(rv, event) -> bool:
    try:
        check_auth_rules_for_event(rv, event, {})
    except AuthError:
        return False
    return True


@every_version
def test_create_event_is_decided_by_the_state_independent_half_alone(rv):
    """The state dependent half allows a create event whatever the state."""
    check_state_dependent_auth_rules(rv, _create(rv, {"room_version": "nonsense"}), {})
    with pytest.raises(AuthError):
        check_state_independent_auth_rules(rv, _create(rv, {"room_version": "nonsense"}), {})


# -- first join by the creator --------------------------------------------------


@every_version
def test_creator_first_join_needs_no_join_rules(rv):
    room = RoomBuilder(rv)
    room.create()
    check(room, room.build("m.room.member", room.creator, {"membership": "join"}, room.creator))


@every_version
def test_first_join_of_the_creator_named_in_content_depends_on_version(rv):
    """v1-10 take the creator from content.creator; v11 from the sender."""
    room = RoomBuilder(rv)
    room.create({"creator": "@other:example.org", "room_version": rv.identifier})
    other_join = room.build(
        "m.room.member", "@other:example.org", {"membership": "join"}, "@other:example.org"
    )
    sender_join = room.build("m.room.member", room.creator, {"membership": "join"}, room.creator)
    if number(rv) >= 11:
        assert rejection(room, other_join) == "join rule is invite and sender is not invited"
        check(room, sender_join)
    else:
        check(room, other_join)
        assert rejection(room, sender_join) == "join rule is invite and sender is not invited"


@every_version
def test_creator_join_after_other_events_follows_the_join_rules(rv):
    """The special case needs the create event to be the ONLY prev event."""
    room = RoomBuilder(rv)
    create = room.create()
    topic = room.send("m.room.name", room.creator, {"name": "x"}, "")
    event = room.build(
        "m.room.member",
        room.creator,
        {"membership": "join"},
        room.creator,
        prev_events=[create.event_id, topic.event_id],
    )
    assert rejection(room, event) == "join rule is invite and sender is not invited"


# -- rule 2: the event's auth_events ---------------------------------------------


@every_version
def test_auth_event_not_supplied_is_rejected(rv):
    room = standard_room(rv, members=[BOB])
    event = room.build("m.room.message", BOB, {"body": "hi"})
    missing = room.state[("m.room.power_levels", "")].event_id
    known = {e.event_id: e for e in room.auth_events_of(event).values() if e.event_id != missing}
    with pytest.raises(AuthError) as err:
        check_state_independent_auth_rules(rv, event, known)
    assert err.value.reason == f"auth event {missing} is not known"


@every_version
def test_duplicate_type_and_state_key_among_auth_events_is_rejected(rv):
    room = standard_room(rv, members=[BOB])
    old_pl = room.state[("m.room.power_levels", "")]
    room.send("m.room.power_levels", room.creator, {"users": {room.creator: 100}}, "")
    event = room.build("m.room.message", BOB, {"body": "hi"})
    event = room.build(
        "m.room.message",
        BOB,
        {"body": "hi"},
        auth_events=[*event.listed_auth_event_ids(), old_pl.event_id],
    )
    assert (
        rejection(room, event)
        == "auth_events has more than one m.room.power_levels event with state_key ''"
    )


@every_version
@pytest.mark.parametrize(
    "extra", [("m.room.join_rules", ""), ("m.room.member", "@creator:example.org")]
)
def test_auth_event_not_named_by_the_selection_algorithm_is_rejected(rv, extra):
    """A message needs neither the join rules nor another user's membership."""
    room = standard_room(rv, members=[BOB])
    event = room.build("m.room.message", BOB, {"body": "hi"})
    event = room.build(
        "m.room.message",
        BOB,
        {"body": "hi"},
        auth_events=[*event.listed_auth_event_ids(), room.state[extra].event_id],
    )
    assert rejection(room, event) == (
        f"auth_events has a {extra[0]} event with state_key {extra[1]!r} that this event does not need"
    )


@every_version
def test_non_state_auth_event_is_rejected(rv):
    room = standard_room(rv, members=[BOB])
    message = room.send("m.room.message", BOB, {"body": "hi"})
    event = room.build("m.room.message", BOB, {"body": "again"})
    event = room.build(
        "m.room.message",
        BOB,
        {"body": "again"},
        auth_events=[*event.listed_auth_event_ids(), message.event_id],
    )
    assert (
        rejection(room, event)
        == f"auth event {message.event_id} (m.room.message) is not a state event"
    )


@every_version
def test_rejected_auth_event_is_rejected(rv):
    room = standard_room(rv, members=[BOB])
    event = room.build("m.room.message", BOB, {"body": "hi"})
    auth = room.auth_events_of(event)
    bob_join = auth[("m.room.member", BOB)]
    tainted = make_event_from_dict(bob_join.get_dict(), rv, rejected_reason="auth_error")
    assert tainted.event_id == bob_join.event_id
    by_id = {e.event_id: e for e in auth.values()}
    by_id[tainted.event_id] = tainted
    with pytest.raises(AuthError) as err:
        check_state_independent_auth_rules(rv, event, by_id)
    assert err.value.reason == f"auth event {bob_join.event_id} was rejected"


@some_versions(lambda n: n <= 11)  # v12 never lists it: see test_v12.py
def test_auth_events_without_create_event_are_rejected(rv):
    room = standard_room(rv, members=[BOB])
    event = room.build("m.room.message", BOB, {"body": "hi"})
    create_id = room.state[("m.room.create", "")].event_id
    event = room.build(
        "m.room.message",
        BOB,
        {"body": "hi"},
        auth_events=[e for e in event.listed_auth_event_ids() if e != create_id],
    )
    assert rejection(room, event) == "auth_events has no m.room.create event"


@every_version
def test_auth_event_from_another_room_is_rejected(rv):
    room = standard_room(rv, members=[BOB])
    other = RoomBuilder(rv, room_id="!other:example.org")
    other.create()
    foreign_pl = other.send("m.room.power_levels", other.creator, {"users": {BOB: 100}}, "")
    room.events[foreign_pl.event_id] = foreign_pl
    event = room.build("m.room.message", BOB, {"body": "hi"})
    own_pl = room.state[("m.room.power_levels", "")].event_id
    ids = [foreign_pl.event_id if e == own_pl else e for e in event.listed_auth_event_ids()]
    event = room.build("m.room.message", BOB, {"body": "hi"}, auth_events=ids)
    assert (
        rejection(room, event)
        == f"auth event {foreign_pl.event_id} belongs to another room {other.room_id}"
    )


@every_version
def test_unlisted_events_in_the_auth_event_map_are_ignored(rv):
    room = standard_room(rv, members=[BOB])
    event = room.build("m.room.message", BOB, {"body": "hi"})
    check_state_independent_auth_rules(rv, event, room.events)


# -- auth events selection ------------------------------------------------------


@every_version
def test_selection_for_a_create_event_is_empty(rv):
    assert auth_types_for_event(rv, _create(rv)) == []


@every_version
def test_selection_for_a_message(rv):
    event = make_pdu(rv, type="m.room.message", sender=BOB, content={"body": "x"})
    assert auth_types_for_event(rv, event) == [
        ("m.room.create", ""),
        ("m.room.power_levels", ""),
        ("m.room.member", BOB),
    ]


@every_version
@pytest.mark.parametrize(
    "membership,sender,wants_join_rules",
    [
        ("join", BOB, True),
        ("invite", ALICE, True),
        ("knock", BOB, True),
        ("leave", BOB, False),
        ("ban", ALICE, False),
    ],
)
def test_selection_for_membership_events(rv, membership, sender, wants_join_rules):
    event = make_pdu(
        rv, type="m.room.member", sender=sender, content={"membership": membership}, state_key=BOB
    )
    expected = [("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", sender)]
    if sender != BOB:
        expected.append(("m.room.member", BOB))
    if wants_join_rules:
        expected.append(("m.room.join_rules", ""))
    assert auth_types_for_event(rv, event) == expected


@every_version
def test_selection_for_a_third_party_invite_includes_the_token_event(rv):
    content = {
        "membership": "invite",
        "third_party_invite": {"signed": {"mxid": BOB, "token": "tok"}},
    }
    event = make_pdu(rv, type="m.room.member", sender=ALICE, content=content, state_key=BOB)
    assert ("m.room.third_party_invite", "tok") in auth_types_for_event(rv, event)


@every_version
def test_selection_for_a_restricted_join_includes_the_authoriser_from_v8(rv):
    content = {"membership": "join", "join_authorised_via_users_server": ALICE}
    event = make_pdu(rv, type="m.room.member", sender=BOB, content=content, state_key=BOB)
    assert (("m.room.member", ALICE) in auth_types_for_event(rv, event)) == (number(rv) >= 8)


# -- rule 3: m.federate -------------------------------------------------------------


def _unfederated_room(rv, federate):
    room = RoomBuilder(rv)
    content = {"room_version": rv.identifier, "m.federate": federate}
    if number(rv) < 11:
        content["creator"] = room.creator
    room.create(content)
    room.member(room.creator, "join")
    room.send("m.room.power_levels", room.creator, {"users": {room.creator: 100}}, "")
    room.send("m.room.join_rules", room.creator, {"join_rule": "public"}, "")
    return room


@every_version
def test_unfederated_room_rejects_remote_joins(rv):
    room = _unfederated_room(rv, False)
    event = room.build("m.room.member", BOB, {"membership": "join"}, BOB)
    assert (
        rejection(room, event)
        == "room is not federated and the sender is on another server than the creator"
    )


@every_version
def test_unfederated_room_rejects_remote_messages_even_from_members(rv):
    room = _unfederated_room(rv, False)
    room.member(BOB, "join")  # sneaked into the state
    event = room.build("m.room.message", BOB, {"body": "hi"})
    assert (
        rejection(room, event)
        == "room is not federated and the sender is on another server than the creator"
    )


@every_version
def test_unfederated_room_allows_local_users(rv):
    room = _unfederated_room(rv, False)
    check(room, room.build("m.room.member", ALICE, {"membership": "join"}, ALICE))


@every_version
@pytest.mark.parametrize("federate", [True, "false", 0])
def test_only_an_explicit_false_m_federate_blocks_remote_users(rv, federate):
    room = _unfederated_room(rv, federate)
    check(room, room.build("m.room.member", BOB, {"membership": "join"}, BOB))


# -- rule 4 of v1-5: m.room.aliases -----------------------------------------------


@every_version
def test_aliases_from_a_non_member_of_the_named_server_depends_on_version(rv):
    """v1-5 let any server publish its aliases; v6+ treat them as any state."""
    room = standard_room(rv, members=[ALICE])
    event = room.build("m.room.aliases", BOB, {"aliases": ["#a:other.org"]}, "other.org")
    if number(rv) <= 5:
        check(room, event)
    else:
        assert rejection(room, event) == "sender is not joined to the room"


@every_version
def test_aliases_from_a_member_without_power_depends_on_version(rv):
    room = standard_room(rv, members=[BOB])
    event = room.build("m.room.aliases", BOB, {"aliases": ["#a:other.org"]}, "other.org")
    if number(rv) <= 5:
        check(room, event)
    else:
        assert (
            rejection(room, event)
            == "sender's power level 0 is below the 50 required to send m.room.aliases"
        )


@some_versions(lambda n: n <= 5)
def test_aliases_for_another_server_is_rejected_in_v1_to_v5(rv):
    room = standard_room(rv, members=[BOB])
    event = room.build("m.room.aliases", BOB, {"aliases": ["#a:example.org"]}, "example.org")
    assert rejection(room, event) == "m.room.aliases state_key does not match the sender's domain"
    no_key = room.build("m.room.aliases", BOB, {"aliases": []})
    assert rejection(room, no_key) == "m.room.aliases event has no state_key"


# -- rule "sender must be joined" ----------------------------------------------------


@every_version
@pytest.mark.parametrize("membership", [None, "invite", "leave", "ban", "knock"])
def test_only_joined_users_may_send_messages(rv, membership):
    room = standard_room(rv, join_rule="knock" if number(rv) >= 7 else "invite", members=[ALICE])
    if membership is not None:
        room.member(
            BOB, membership, sender=room.creator if membership in ("invite", "ban") else BOB
        )
    event = room.build("m.room.message", BOB, {"body": "hi"})
    assert rejection(room, event) == "sender is not joined to the room"


@every_version
def test_joined_user_may_send_a_message(rv):
    room = standard_room(rv, members=[BOB])
    check(room, room.build("m.room.message", BOB, {"body": "hi"}))


# -- m.room.third_party_invite --------------------------------------------------------


@every_version
def test_third_party_invite_event_needs_only_the_invite_level(rv):
    """It skips the required power level (state_default 50) of other state."""
    room = standard_room(rv, members=[BOB])
    check(
        room,
        room.build(
            "m.room.third_party_invite", BOB, {"display_name": "x", "public_key": "k"}, "token"
        ),
    )


@every_version
def test_third_party_invite_event_below_the_invite_level_is_rejected(rv):
    room = standard_room(rv, members=[BOB], power_levels={"invite": 10})
    event = room.build(
        "m.room.third_party_invite", BOB, {"display_name": "x", "public_key": "k"}, "token"
    )
    assert rejection(room, event) == "sender's power level 0 is below the invite level 10"


# -- required power level ---------------------------------------------------------------


@every_version
@pytest.mark.parametrize(
    "etype,state_key,power_levels,bob_level,allowed",
    [
        ("m.room.message", None, {}, 0, True),
        ("m.room.message", None, {"events_default": 10}, 9, False),
        ("m.room.message", None, {"events_default": 10}, 10, True),
        (
            "m.room.message",
            None,
            {"events": {"m.room.message": 20}, "events_default": 0},
            19,
            False,
        ),
        ("m.room.topic", "", {}, 49, False),
        ("m.room.topic", "", {}, 50, True),
        ("m.room.topic", "", {"state_default": 20}, 20, True),
        ("m.room.topic", "", {"events": {"m.room.topic": 0}}, 0, True),
        ("com.example.custom", "", {"events_default": 100, "state_default": 0}, 0, True),
        ("com.example.custom", None, {"events_default": 100, "state_default": 0}, 99, False),
    ],
)
def test_required_power_level(rv, etype, state_key, power_levels, bob_level, allowed):
    room = standard_room(rv, members=[BOB], users={BOB: bob_level}, power_levels=power_levels)
    event = room.build(etype, BOB, {}, state_key)
    assert is_allowed(room, event) == allowed
    if not allowed:
        assert rejection(room, event).startswith(f"sender's power level {bob_level} is below the ")


@every_version
def test_required_power_level_without_power_levels_event_uses_the_defaults(rv):
    """No power levels: creator 100, others 0, state needs 50, messages 0."""
    room = RoomBuilder(rv)
    room.create()
    room.member(room.creator, "join")
    room.send("m.room.join_rules", room.creator, {"join_rule": "public"}, "")
    room.member(BOB, "join")
    check(room, room.build("m.room.message", BOB, {"body": "hi"}))
    check(room, room.build("m.room.topic", room.creator, {"topic": "t"}, ""))
    topic = room.build("m.room.topic", BOB, {"topic": "t"}, "")
    assert (
        rejection(room, topic)
        == "sender's power level 0 is below the 50 required to send m.room.topic"
    )


# -- '@' state keys -------------------------------------------------------------------------


@every_version
def test_state_key_of_another_user_is_rejected(rv):
    room = standard_room(rv, members=[BOB])
    event = room.build("com.example.status", room.creator, {}, BOB)
    assert rejection(room, event) == "state_key starts with '@' but is not the sender's user ID"


@every_version
def test_state_key_of_the_sender_is_allowed(rv):
    room = standard_room(rv, members=[BOB], power_levels={"state_default": 0})
    check(room, room.build("com.example.status", BOB, {}, BOB))
    check(room, room.build("com.example.status", BOB, {}, "not-a-user"))


# -- v1-2: m.room.redaction ---------------------------------------------------------------


@every_version
def test_redaction_without_redact_level_of_an_event_from_another_server(rv):
    """v1-2 need the redact level or same-domain event IDs; v3+ allow it."""
    room = standard_room(rv, members=[BOB])
    target = room.send("m.room.message", room.creator, {"body": "hi"})
    event = room.build("m.room.redaction", BOB, {}, redacts=target.event_id)
    if number(rv) <= 2:
        assert rejection(room, event) == (
            "sender's power level 0 is below the redact level 50 and the redacted event is from another server"
        )
    else:
        check(room, event)


@some_versions(lambda n: n <= 2)
def test_v1_redaction_of_an_event_with_the_same_event_id_domain_is_allowed(rv):
    room = standard_room(rv, members=[BOB, "@bobby:other.org"])
    target = room.send("m.room.message", "@bobby:other.org", {"body": "hi"})
    assert target.event_id.endswith(":other.org")
    check(room, room.build("m.room.redaction", BOB, {}, redacts=target.event_id))


@some_versions(lambda n: n <= 2)
def test_v1_redaction_with_the_redact_level_is_allowed(rv):
    room = standard_room(rv, members=[BOB], users={BOB: 50})
    target = room.send("m.room.message", room.creator, {"body": "hi"})
    check(room, room.build("m.room.redaction", BOB, {}, redacts=target.event_id))
    missing = room.build("m.room.redaction", "@x:other.org", {})
    assert not is_allowed(room, missing)


@every_version
def test_redaction_is_subject_to_its_event_power_level(rv):
    room = standard_room(
        rv, members=[BOB], users={BOB: 60}, power_levels={"events": {"m.room.redaction": 70}}
    )
    target = room.send("m.room.message", BOB, {"body": "hi"})
    event = room.build("m.room.redaction", BOB, {}, redacts=target.event_id)
    assert (
        rejection(room, event)
        == "sender's power level 60 is below the 70 required to send m.room.redaction"
    )


# -- the two halves on their own ---------------------------------------------------------


@every_version
def test_state_dependent_half_uses_the_state_given_not_the_auth_events(rv):
    """Soft failure: allowed by its auth events, refused by the current state."""
    room = standard_room(rv, members=[BOB])
    message = room.build("m.room.message", BOB, {"body": "hi"})
    check(room, message)
    room.member(BOB, "ban", sender=room.creator)
    with pytest.raises(AuthError) as err:
        check_state_dependent_auth_rules(rv, message, room.state)
    assert err.value.reason == "sender is not joined to the room"


@every_version
def test_state_dependent_half_needs_a_create_event(rv):
    room = standard_room(rv, members=[BOB])
    event = room.build("m.room.message", BOB, {"body": "hi"})
    state = {k: v for k, v in room.state.items() if k != ("m.room.create", "")}
    with pytest.raises(AuthError) as err:
        check_state_dependent_auth_rules(rv, event, state)
    assert err.value.reason == "no m.room.create event in the room state"


@every_version
def test_malformed_sender_is_rejected(rv):
    room = standard_room(rv, members=[BOB])
    event = room.build("m.room.message", BOB, {"body": "hi"}, extra={"sender": "nobody"})
    with pytest.raises(AuthError) as err:
        check_state_dependent_auth_rules(rv, event, room.state)
    assert err.value.reason == "sender 'nobody' is not a valid user ID"
