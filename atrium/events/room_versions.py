"""Room versions 1 to 12: the flags that make each one behave differently.

Every place that behaves differently between room versions reads one of these
flags instead of comparing version strings, so adding a version is one entry in
``KNOWN_ROOM_VERSIONS``. The flags follow the sections of the spec's
"Room Versions" chapter (https://spec.matrix.org/latest/rooms/).
"""

from __future__ import annotations

import enum

import attrs


class EventFormatVersion(enum.IntEnum):
    """How an event is laid out on the wire and how its ID is made.

    Persisted with every event: an event is loaded with the format it was
    stored with, never one inferred again from the room version.
    """

    # v1/v2 rooms: `event_id` is a field of the event ("$opaque:domain"),
    # prev_events/auth_events are [[event_id, {hashes}], ...] pairs.
    V1 = 1
    # v3 rooms: the event ID is "$" + standard unpadded base64 of the
    # reference hash; prev_events/auth_events are plain ID lists.
    V2 = 2
    # v4+ rooms: as V2 but URL-safe unpadded base64.
    V3 = 3


class StateResolutionVersion(enum.IntEnum):
    V1 = 1
    V2 = 2
    # rooms/v12 "State resolution": v2 with the iterative auth checks of
    # step 2 starting from an empty state map, and the conflicted state
    # subgraph added to the full conflicted set.
    V2_1 = 3


class RedactionRules(enum.IntEnum):
    """Which redaction algorithm (spec "Redactions" per room version) applies."""

    V1 = 1  # rooms 1-5: m.room.aliases keeps `aliases`
    V6 = 6  # rooms 6-7: `aliases` no longer kept
    V8 = 8  # room 8: join_rules keeps `allow`
    V9 = 9  # rooms 9-10: member keeps `join_authorised_via_users_server`
    V11 = 11  # room 11: create keeps all content, PL keeps `invite`, redaction keeps `redacts`


@attrs.frozen(slots=True)
class RoomVersion:
    identifier: str
    event_format: EventFormatVersion
    state_res: StateResolutionVersion
    redaction_rules: RedactionRules
    # v5+: a server's signing key must be valid at the event's origin_server_ts.
    enforce_key_validity: bool
    # v1-5: m.room.aliases events are allowed if the state_key is the sender's
    # domain, bypassing power levels.
    special_case_aliases_auth: bool
    # v1-2: auth rule 11 of rooms/v1 — an m.room.redaction needs the redact
    # level, or an event ID on the same domain as the redacted event's ID.
    # From v3 the auth rules no longer look at redactions specially.
    special_case_redaction_auth: bool
    # v6+: integers out of the [-(2**53)+1, (2**53)-1] range and floats are
    # refused in events (canonical JSON is strict).
    strict_canonicaljson: bool
    # v6+: `notifications` power levels are checked by the power-level rules.
    limit_notifications_power_levels: bool
    # v7+: the `knock` join rule and membership.
    knock_join_rule: bool
    # v8+: the `restricted` join rule (join_authorised_via_users_server).
    restricted_join_rule: bool
    # v9+: redaction keeps join_authorised_via_users_server (see RedactionRules);
    # kept as its own flag because auth rules ask about it directly.
    restricted_join_rule_fix: bool
    # v10+: the `knock_restricted` join rule.
    knock_restricted_join_rule: bool
    # v10+: power level values must be integers (not strings).
    enforce_int_power_levels: bool
    # v11+: the create event has no `creator`; the sender is the creator.
    implicit_room_creator: bool
    # v11+: `redacts` lives in the content of m.room.redaction events.
    redacts_in_content: bool
    # v12+: the room ID is the create event's ID with the `!` sigil; the
    # create event has no `room_id` and is never listed in `auth_events`
    # (every other event refers to it through its room ID).
    room_id_is_create_event_id: bool
    # v12+: the create event's sender and `content.additional_creators` are
    # the room creators, with an infinite power level that power level
    # events may not mention.
    privileged_creators: bool

    @property
    def is_v1_event_ids(self) -> bool:
        return self.event_format == EventFormatVersion.V1


def _version(
    identifier: str,
    event_format: EventFormatVersion,
    state_res: StateResolutionVersion,
    redaction_rules: RedactionRules,
    number: int,
) -> RoomVersion:
    return RoomVersion(
        identifier=identifier,
        event_format=event_format,
        state_res=state_res,
        redaction_rules=redaction_rules,
        enforce_key_validity=number >= 5,
        special_case_aliases_auth=number <= 5,
        special_case_redaction_auth=number <= 2,
        strict_canonicaljson=number >= 6,
        limit_notifications_power_levels=number >= 6,
        knock_join_rule=number >= 7,
        restricted_join_rule=number >= 8,
        restricted_join_rule_fix=number >= 9,
        knock_restricted_join_rule=number >= 10,
        enforce_int_power_levels=number >= 10,
        implicit_room_creator=number >= 11,
        redacts_in_content=number >= 11,
        room_id_is_create_event_id=number >= 12,
        privileged_creators=number >= 12,
    )


_F, _S, _R = EventFormatVersion, StateResolutionVersion, RedactionRules

V1 = _version("1", _F.V1, _S.V1, _R.V1, 1)
V2 = _version("2", _F.V1, _S.V2, _R.V1, 2)
V3 = _version("3", _F.V2, _S.V2, _R.V1, 3)
V4 = _version("4", _F.V3, _S.V2, _R.V1, 4)
V5 = _version("5", _F.V3, _S.V2, _R.V1, 5)
V6 = _version("6", _F.V3, _S.V2, _R.V6, 6)
V7 = _version("7", _F.V3, _S.V2, _R.V6, 7)
V8 = _version("8", _F.V3, _S.V2, _R.V8, 8)
V9 = _version("9", _F.V3, _S.V2, _R.V9, 9)
V10 = _version("10", _F.V3, _S.V2, _R.V9, 10)
V11 = _version("11", _F.V3, _S.V2, _R.V11, 11)
# rooms/v12: redaction is unchanged from v11.
V12 = _version("12", _F.V3, _S.V2_1, _R.V11, 12)

KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {
    v.identifier: v for v in (V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12)
}

# What createRoom uses when the client does not ask for a version, and what
# /capabilities advertises as the default. rooms/ "Room versions": "Servers
# SHOULD use room version 12 as the default room version when creating new
# rooms." (Joining a v12 room by ID needs `via`: its ID names no server.)
DEFAULT_ROOM_VERSION = V12


def get_room_version(identifier: str) -> RoomVersion | None:
    """The RoomVersion for an identifier, or None for one we do not support."""
    return KNOWN_ROOM_VERSIONS.get(identifier)
