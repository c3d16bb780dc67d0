"""The authorization rules of room versions 1-12: the public entry points.

Spec: rooms/vN "Authorization rules" (fragments v1-auth-rules, v3-auth-rules,
v8-auth-rules and the inline rules of v6, v7, v10, v11, v12), and server-server
API "Auth events selection" and "Checks performed on receipt of a PDU".

The rules are split in two, the way receipt of a PDU uses them:

* check_state_independent_auth_rules: what can be decided from the event
  and the events it lists in its own `auth_events` (create event rules,
  shape of `auth_events`). Run once per event.
* check_state_dependent_auth_rules: the rest, evaluated against a state
  map. Run against the event's auth events, the state before the event and
  the current state (soft failure), and by state resolution.

Room version differences are flags of RoomVersion, never version strings.
"""

from __future__ import annotations

from collections.abc import Mapping

from atrium.auth.errors import AuthError
from atrium.auth.identifiers import domain_of
from atrium.auth.membership import JOIN, check_membership_event, get_membership
from atrium.auth.power_levels import (
    INVITE_DEFAULT,
    REDACT_DEFAULT,
    StateMap,
    check_additional_creators,
    check_power_levels_event,
    get_named_level,
    get_send_level,
    get_user_power_level,
)
from atrium.events.event import Event
from atrium.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion

__all__ = [
    "AuthError",
    "StateMap",
    "auth_types_for_event",
    "selected_auth_types",
    "check_auth_rules_for_event",
    "check_state_dependent_auth_rules",
    "check_state_independent_auth_rules",
    "get_named_level",
    "get_send_level",
    "get_user_power_level",
]

CREATE = ("m.room.create", "")
POWER_LEVELS = ("m.room.power_levels", "")
JOIN_RULES = ("m.room.join_rules", "")


def selected_auth_types(room_version: RoomVersion, event: Event) -> list[tuple[str, str]]:
    """The (type, state_key) pairs an event lists in its `auth_events`.

    auth_types_for_event without the create event in rooms whose room ID
    names it (rooms/v12: "The m.room.create event MUST NOT be selected").
    """
    types = auth_types_for_event(room_version, event)
    if room_version.room_id_is_create_event_id:
        return [key for key in types if key != CREATE]
    return types


def auth_types_for_event(room_version: RoomVersion, event: Event) -> list[tuple[str, str]]:
    """The (type, state_key) pairs the authorization rules read for an event.

    Server-server API "Auth events selection": the create event (listed in
    rooms 1-11, implied by the room ID from v12: see selected_auth_types
    for what an event lists), power levels, the sender's member event and, for
    m.room.member events, the target's member event, the join rules (join,
    invite, knock), the m.room.third_party_invite named by the token of a
    third party invite, and (rooms with restricted joins) the member event
    of the user in `join_authorised_via_users_server`.
    The create event itself has no auth events.
    """
    if event.type == "m.room.create":
        return []
    wanted = [CREATE, POWER_LEVELS, ("m.room.member", event.sender)]
    if event.type == "m.room.member":
        content = event.content
        membership = content.get("membership")
        if event.state_key is not None:
            wanted.append(("m.room.member", event.state_key))
        if membership in ("join", "invite", "knock"):
            wanted.append(JOIN_RULES)
        if membership == "invite":
            third_party_invite = content.get("third_party_invite")
            signed = (
                third_party_invite.get("signed") if isinstance(third_party_invite, dict) else None
            )
            token = signed.get("token") if isinstance(signed, dict) else None
            if isinstance(token, str):
                wanted.append(("m.room.third_party_invite", token))
        if membership == "join" and room_version.restricted_join_rule:
            authoriser = content.get("join_authorised_via_users_server")
            if isinstance(authoriser, str):
                wanted.append(("m.room.member", authoriser))
    # The sender is usually also the target: keep each pair once, in order.
    return list(dict.fromkeys(wanted))


def check_state_independent_auth_rules(
    room_version: RoomVersion, event: Event, auth_events: Mapping[str, Event]
) -> None:
    """Rules 1 and 2: the create event rules and the event's own auth_events.

    ``auth_events`` maps event ID to event and must hold every event the
    event lists in `auth_events` (it may hold more; those are ignored). A
    listed auth event that is missing from it is a rejection: the caller
    fetches auth events before authorising.
    Raises AuthError; returns None when these rules allow the event.
    """
    if event.type == "m.room.create":
        _check_create(room_version, event)
        return

    create_event: Event | None = None
    if room_version.room_id_is_create_event_id:
        # rooms/v12 rule 2: the room ID must be the ID of an accepted create
        # event, with `!` for `$`.
        room_id = event.as_dict_ref().get("room_id")
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise AuthError("event has no room_id")
        create_id = "$" + room_id[1:]
        create_event = auth_events.get(create_id)
        if create_event is None:
            raise AuthError(f"the room's create event {create_id} is not known")
        if create_event.type != "m.room.create" or create_event.state_key != "":
            raise AuthError(f"room ID {room_id} does not name an m.room.create event")
        if create_event.rejected_reason is not None:
            raise AuthError(f"the room's create event {create_id} was rejected")

    selected: dict[tuple[str, str], Event] = {}
    allowed = set(selected_auth_types(room_version, event))
    for event_id in event.listed_auth_event_ids():
        auth_event = auth_events.get(event_id)
        if auth_event is None:
            raise AuthError(f"auth event {event_id} is not known")
        if auth_event.state_key is None:
            raise AuthError(f"auth event {event_id} ({auth_event.type}) is not a state event")
        key = (auth_event.type, auth_event.state_key)
        if key in selected:
            raise AuthError(
                f"auth_events has more than one {key[0]} event with state_key {key[1]!r}"
            )
        if key not in allowed:
            raise AuthError(
                f"auth_events has a {key[0]} event with state_key {key[1]!r} that this event does not need"
            )
        if auth_event.rejected_reason is not None:
            raise AuthError(f"auth event {event_id} was rejected")
        selected[key] = auth_event

    if create_event is not None:
        selected[CREATE] = create_event
    if CREATE not in selected:
        raise AuthError("auth_events has no m.room.create event")
    for auth_event in selected.values():
        if auth_event.room_id != event.room_id:
            raise AuthError(
                f"auth event {auth_event.event_id} belongs to another room {auth_event.room_id}"
            )


def _check_create(room_version: RoomVersion, event: Event) -> None:
    """Rule 1: m.room.create."""
    if event.as_dict_ref().get("prev_events"):
        raise AuthError("m.room.create event has prev_events")
    if room_version.room_id_is_create_event_id:
        # rooms/v12 rule 1.2: the room ID is derived from this event's ID.
        if "room_id" in event.as_dict_ref():
            raise AuthError("m.room.create event has a room_id")
    else:
        room_domain = domain_of(event.room_id)
        if room_domain is None or room_domain != domain_of(event.sender):
            raise AuthError("m.room.create sender's domain does not match the room ID's domain")
    content = event.content
    if "room_version" in content and content["room_version"] not in KNOWN_ROOM_VERSIONS:
        raise AuthError(f"m.room.create has an unknown room_version {content['room_version']!r}")
    if room_version.privileged_creators:
        # rooms/v12 rule 1.4.
        check_additional_creators(event)
    # v11 dropped `creator`: the sender is the creator (implicit_room_creator).
    if not room_version.implicit_room_creator and "creator" not in content:
        raise AuthError("m.room.create has no creator")


def check_state_dependent_auth_rules(
    room_version: RoomVersion, event: Event, auth_state: StateMap
) -> None:
    """Rules 3 onward, evaluated against ``auth_state``.

    ``auth_state`` maps (type, state_key) to event: the event's own auth
    events, the state before it, or the current state. Only the entries
    auth_types_for_event names are read; a full state map is fine.
    Raises AuthError; returns None when the event is allowed.
    """
    if event.type == "m.room.create":
        # Entirely decided by rule 1 (state independent).
        return

    create_event = auth_state.get(CREATE)
    if create_event is None:
        raise AuthError("no m.room.create event in the room state")

    sender = event.sender
    sender_domain = domain_of(sender)
    if sender_domain is None:
        raise AuthError(f"sender {sender!r} is not a valid user ID")

    # Rule 3: a room that does not federate takes events from the creating
    # server only. Only an explicit `false` counts.
    if create_event.content.get("m.federate", True) is False and sender_domain != domain_of(
        create_event.sender
    ):
        raise AuthError(
            "room is not federated and the sender is on another server than the creator"
        )

    # v1-5 rule 4: a server may publish its aliases whatever its power level.
    if room_version.special_case_aliases_auth and event.type == "m.room.aliases":
        if event.state_key is None:
            raise AuthError("m.room.aliases event has no state_key")
        if event.state_key != sender_domain:
            raise AuthError("m.room.aliases state_key does not match the sender's domain")
        return

    if event.type == "m.room.member":
        check_membership_event(room_version, event, auth_state)
        return

    if get_membership(auth_state, sender) != JOIN:
        raise AuthError("sender is not joined to the room")

    sender_level = get_user_power_level(sender, auth_state)

    if event.type == "m.room.third_party_invite":
        invite_level = get_named_level(auth_state, "invite", INVITE_DEFAULT)
        if sender_level < invite_level:
            raise AuthError(
                f"sender's power level {sender_level} is below the invite level {invite_level}"
            )
        return

    required = get_send_level(event.type, event.state_key, auth_state.get(POWER_LEVELS))
    if sender_level < required:
        raise AuthError(
            f"sender's power level {sender_level} is below the {required} required to send {event.type}"
        )

    # Users own the state keys that are their user ID.
    state_key = event.state_key
    if state_key is not None and state_key.startswith("@") and state_key != sender:
        raise AuthError("state_key starts with '@' but is not the sender's user ID")

    if event.type == "m.room.power_levels":
        check_power_levels_event(room_version, event, auth_state)
        return

    if room_version.special_case_redaction_auth and event.type == "m.room.redaction":
        _check_v1_redaction(event, sender_level, auth_state)


def _check_v1_redaction(event: Event, sender_level: int, auth_state: StateMap) -> None:
    """v1-2 rule 11: the redact level, or redacting an event whose ID is on
    the redaction's own event ID domain (whether that redaction is applied is
    decided when both events are known, not here)."""
    redact_level = get_named_level(auth_state, "redact", REDACT_DEFAULT)
    if sender_level >= redact_level:
        return
    redacts = event.redacts
    if (
        redacts is not None
        and domain_of(redacts) is not None
        and domain_of(redacts) == domain_of(event.event_id)
    ):
        return
    raise AuthError(
        f"sender's power level {sender_level} is below the redact level {redact_level} "
        "and the redacted event is from another server"
    )


def check_auth_rules_for_event(
    room_version: RoomVersion, event: Event, auth_events: StateMap
) -> None:
    """Both halves, for the common case where the state map given IS the
    event's auth events (e.g. a locally built event, or step 4 of receipt).

    Every event listed in the event's `auth_events` must be among the values
    of ``auth_events``. To check against other state (state before the
    event, current state), call check_state_dependent_auth_rules directly.
    """
    by_id = {auth_event.event_id: auth_event for auth_event in auth_events.values()}
    check_state_independent_auth_rules(room_version, event, by_id)
    check_state_dependent_auth_rules(room_version, event, auth_events)
