"""Power levels: reading levels out of room state, and the auth rules for
`m.room.power_levels` events.

Spec: server-server API "Definitions" (required power level, invite/kick/
ban/redact level), the `m.room.power_levels` schema (defaults), rooms/v1
"m.room.power_levels events accept values as strings" (v1-9) and "... as
floats" (v1-5), and the power level rule of each version's auth rules
(rule 10 in v1-5, rule 9 from v6, with integer-only values from v10).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from atrium.auth.errors import AuthError
from atrium.auth.identifiers import is_valid_user_id
from atrium.events.event import Event
from atrium.events.room_versions import RoomVersion
from atrium.events.validation import is_valid_user_id as is_valid_sender_user_id

StateMap = Mapping[tuple[str, str], Event]

# The integer-valued top-level properties the rules compare one by one.
LEVEL_KEYS = ("users_default", "events_default", "state_default", "ban", "redact", "kick", "invite")

# The default of each named level when the property (or the whole power
# levels event) is missing.
INVITE_DEFAULT = 0
KICK_DEFAULT = 50
BAN_DEFAULT = 50
REDACT_DEFAULT = 50
STATE_DEFAULT = 50
EVENTS_DEFAULT = 0
USERS_DEFAULT = 0
# Without any m.room.power_levels event the room creator has this level.
CREATOR_DEFAULT = 100

# rooms/v1 "accept values as strings": optional surrounding whitespace, an
# optional sign, base 10 digits (leading zeroes allowed). re.ASCII keeps
# `\s` and the digits to ASCII, unlike Python's int() which takes Unicode
# digits and underscores.
_INTEGER_STRING = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)


def parse_power_level(value: object, room_version: RoomVersion) -> int | None:
    """The integer a power level value stands for, or None if it is not one.

    v10+ (enforce_int_power_levels) accept only JSON integers. v1-9 also
    accept strings holding an integer; v1-5 (which do not enforce canonical
    JSON) also accept floats, truncated toward zero, except inf and NaN.
    Booleans are never levels, though Python treats them as ints.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if room_version.enforce_int_power_levels:
        return None
    if isinstance(value, str):
        return int(value) if _INTEGER_STRING.fullmatch(value) else None
    if isinstance(value, float) and not room_version.strict_canonicaljson:
        return int(value) if math.isfinite(value) else None
    return None


def room_creator(create_event: Event) -> str | None:
    """The room creator named by an m.room.create event.

    v11 (implicit_room_creator) dropped `creator` from the content: the
    sender of the create event is the creator.
    """
    if create_event.room_version.implicit_room_creator:
        return create_event.sender
    creator = create_event.content.get("creator")
    return creator if isinstance(creator, str) else None


def room_creators(create_event: Event) -> set[str]:
    """rooms/v12 "room creators": the create event's sender plus the user IDs
    in `content.additional_creators` (the rules reject a create event whose
    list is malformed, so anything that is not a string is skipped here)."""
    creators = {create_event.sender}
    additional = create_event.content.get("additional_creators")
    if isinstance(additional, list):
        creators.update(u for u in additional if isinstance(u, str))
    return creators


def check_additional_creators(create_event: Event) -> None:
    """rooms/v12 auth rule 1.4: `additional_creators`, if present, is an
    array of strings that pass the user ID validation applied to `sender`."""
    content = create_event.content
    if "additional_creators" not in content:
        return
    additional = content["additional_creators"]
    # The check validate_event applies to `sender` (historical grammar,
    # valid server name), not the lenient one used for `users` keys.
    if not isinstance(additional, list) or not all(
        isinstance(u, str) and is_valid_sender_user_id(u) for u in additional
    ):
        raise AuthError("m.room.create additional_creators is not a list of user IDs")


def _content_level(pl_event: Event, name: str) -> int | None:
    return parse_power_level(pl_event.content.get(name), pl_event.room_version)


def _level_map(pl_event: Event | None, name: str) -> dict[str, int | None]:
    """`events`, `notifications` or `users` of a power levels event, parsed.

    A property that is not an object counts as empty (only possible in
    v1-9 for `events`/`notifications`, whose shape those versions do not
    check). Unparseable values map to None, meaning "not set".
    """
    if pl_event is None:
        return {}
    raw = pl_event.content.get(name)
    if not isinstance(raw, dict):
        return {}
    return {k: parse_power_level(v, pl_event.room_version) for k, v in raw.items()}


def get_user_power_level(user_id: str, auth_state: StateMap) -> int | float:
    """The power level of ``user_id`` in the given state.

    From `users`, else `users_default`, else 0. With no power levels event
    at all the creator (per the create event, see room_creator) has 100 and
    everyone else 0. In rooms with privileged creators (v12) the room
    creators have an infinite level (``math.inf``), whatever the power
    levels event says.
    """
    create_event = auth_state.get(("m.room.create", ""))
    if (
        create_event is not None
        and create_event.room_version.privileged_creators
        and user_id in room_creators(create_event)
    ):
        return math.inf
    pl_event = auth_state.get(("m.room.power_levels", ""))
    if pl_event is not None:
        level = _level_map(pl_event, "users").get(user_id)
        if level is not None:
            return level
        default = _content_level(pl_event, "users_default")
        return USERS_DEFAULT if default is None else default
    if create_event is not None and room_creator(create_event) == user_id:
        return CREATOR_DEFAULT
    return USERS_DEFAULT


def get_named_level(auth_state: StateMap, name: str, default: int) -> int:
    """A top-level level (`invite`, `kick`, `ban`, `redact`...) or its default."""
    pl_event = auth_state.get(("m.room.power_levels", ""))
    if pl_event is None:
        return default
    level = _content_level(pl_event, name)
    return default if level is None else level


def get_send_level(event_type: str, state_key: str | None, power_levels_event: Event | None) -> int:
    """The *required power level* to send an event of this type.

    `events[type]` if set, else `state_default` (50) for state events and
    `events_default` (0) otherwise. The defaults also apply when the room
    has no power levels event (m.room.power_levels schema).
    """
    level = _level_map(power_levels_event, "events").get(event_type)
    if level is not None:
        return level
    name, default = (
        ("state_default", STATE_DEFAULT)
        if state_key is not None
        else ("events_default", EVENTS_DEFAULT)
    )
    if power_levels_event is None:
        return default
    level = _content_level(power_levels_event, name)
    return default if level is None else level


def _check_shape(room_version: RoomVersion, content: dict[str, Any]) -> None:
    """Rules 9.1-9.3 (v10+) / 10.1 (v1-5) / 9.1 (v6-9): value types.

    v1-9 only check `users`; values there may be integer strings (and
    floats in v1-5). v10 requires real integers everywhere.
    """
    if room_version.enforce_int_power_levels:
        for key in LEVEL_KEYS:
            if key in content and parse_power_level(content[key], room_version) is None:
                raise AuthError(f"power level '{key}' is not an integer: {content[key]!r}")
        for key in ("events", "notifications"):
            if key not in content:
                continue
            value = content[key]
            if not isinstance(value, dict):
                raise AuthError(f"power levels '{key}' is not an object")
            for name, level in value.items():
                if parse_power_level(level, room_version) is None:
                    raise AuthError(f"power level '{key}.{name}' is not an integer: {level!r}")
    if "users" not in content:
        return
    users = content["users"]
    if not isinstance(users, dict):
        raise AuthError("power levels 'users' is not an object")
    for user_id, level in users.items():
        if not is_valid_user_id(user_id):
            raise AuthError(f"power levels 'users' has an invalid user ID {user_id!r}")
        if parse_power_level(level, room_version) is None:
            raise AuthError(f"power level of {user_id} is not an integer: {level!r}")


def check_power_levels_event(room_version: RoomVersion, event: Event, auth_state: StateMap) -> None:
    """The rule for `m.room.power_levels` events, against the current state.

    Changes are compared on parsed values: "50" and 50 are the same level.
    The sender may only touch levels that are, before and after the change,
    no higher than their own; for other users' entries the old level must be
    strictly below the sender's.
    """
    content = event.content
    _check_shape(room_version, content)
    create_event = auth_state.get(("m.room.create", ""))
    if room_version.privileged_creators and create_event is not None:
        # rooms/v12 rule 10.4: creators cannot be listed in `users`.
        users = content.get("users", {})
        listed = room_creators(create_event) & set(users)
        if listed:
            raise AuthError(
                f"power levels 'users' lists room creator(s) {sorted(listed)}, "
                "whose power level is infinite"
            )

    current = auth_state.get(("m.room.power_levels", ""))
    if current is None:
        # The first power levels event of a room may set anything.
        return

    sender = event.sender
    sender_level = get_user_power_level(sender, auth_state)

    def too_high(what: str, old: int | None, new: int | None) -> None:
        if old is not None and old > sender_level:
            raise AuthError(
                f"sender's power level {sender_level} is below the current value {old} of {what}, "
                "so cannot change it"
            )
        if new is not None and new > sender_level:
            raise AuthError(
                f"sender's power level {sender_level} is below the new value {new} of {what}"
            )

    for key in LEVEL_KEYS:
        old = _content_level(current, key)
        new = _content_level(event, key)
        if old != new:
            too_high(f"'{key}'", old, new)

    # v6+ (limit_notifications_power_levels) guards `notifications` like `events`.
    maps = (
        ("events", "notifications")
        if room_version.limit_notifications_power_levels
        else ("events",)
    )
    for key in maps:
        old_map, new_map = _level_map(current, key), _level_map(event, key)
        for name in old_map.keys() | new_map.keys():
            old, new = old_map.get(name), new_map.get(name)
            if old != new:
                too_high(f"'{key}.{name}'", old, new)

    old_users, new_users = _level_map(current, "users"), _level_map(event, "users")
    for user_id in old_users.keys() | new_users.keys():
        old, new = old_users.get(user_id), new_users.get(user_id)
        if old == new:
            continue
        # Other users' entries can only be changed or removed by someone
        # strictly above them; the sender may lower (not raise) their own.
        if user_id != sender and old is not None and old >= sender_level:
            raise AuthError(
                f"sender's power level {sender_level} is not above the power level {old} of {user_id}, "
                "so cannot change it"
            )
        if new is not None and new > sender_level:
            raise AuthError(
                f"sender's power level {sender_level} is below the new power level {new} of {user_id}"
            )
