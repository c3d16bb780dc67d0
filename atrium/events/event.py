"""The PDU model: one ``Event`` class for all three event formats.

An event is its JSON dict plus three things that are not part of the signed
JSON: the format it was stored with, the room version that decides how it is
redacted and authorised, and internal metadata (outlier, soft-failed, stream
position...). The dict is treated as immutable once an Event wraps it.
"""

from __future__ import annotations

import copy
from typing import Any

import attrs

from atrium.crypto.event_hashing import compute_event_id
from atrium.events.redaction import prune_event_dict
from atrium.events.room_versions import EventFormatVersion, RoomVersion


@attrs.define(slots=True)
class EventInternalMetadata:
    """Server-side facts about an event that are not part of its JSON."""

    # Stored without being part of the room DAG's known state (fetched as an
    # auth event, or an invite/knock received out of band).
    outlier: bool = False
    # Passed auth against its own auth events but not against current state:
    # stored, never served to clients, never a forward extremity.
    soft_failed: bool = False
    # Position in the events stream, allocated when persisted.
    stream_ordering: int | None = None
    # Name of the process (stream writer) that persisted it.
    instance_name: str | None = None
    # For locally sent events: the client transaction that created it, so a
    # retried PUT /send returns the same event.
    txn_id: str | None = None
    device_id: str | None = None
    token_id: int | None = None
    # True once the event has been redacted and its dict pruned.
    redacted: bool = False
    # Set on events we sent out as part of a room's history (backfill etc.).
    out_of_band_membership: bool = False
    # A remote server's membership event that reached us through send_join or
    # send_leave: the federation sender relays it to the room's other servers
    # (not back to this origin). Server-server API "Joining Rooms".
    send_on_behalf_of: str | None = None


class Event:
    """A room event (PDU).

    Properties mirror the spec field names. ``redacts`` is None when the field
    is missing, in any room version.
    """

    __slots__ = (
        "_dict",
        "_event_id",
        "format_version",
        "room_version",
        "internal_metadata",
        "rejected_reason",
        "client_form_cache",
        "redacted_because",
    )

    def __init__(
        self,
        event_dict: dict[str, Any],
        room_version: RoomVersion,
        format_version: EventFormatVersion | None = None,
        internal_metadata: EventInternalMetadata | None = None,
        rejected_reason: str | None = None,
    ) -> None:
        self._dict = event_dict
        self.room_version = room_version
        self.format_version = (
            room_version.event_format if format_version is None else format_version
        )
        self.internal_metadata = internal_metadata or EventInternalMetadata()
        self.rejected_reason = rejected_reason
        self._event_id: str | None = None
        # The event as clients see it, minus per-request fields; filled by
        # atrium.events.serialize on first use (events are immutable).
        self.client_form_cache: tuple[dict[str, Any], dict[str, Any]] | None = None
        # For a pruned event: the redaction that pruned it, served to clients
        # as unsigned.redacted_because (clients use it to tell redacted events).
        self.redacted_because: Event | None = None
        if self.format_version == EventFormatVersion.V1:
            event_id = event_dict.get("event_id")
            if not isinstance(event_id, str):
                raise ValueError("v1 format event without an event_id")
            self._event_id = event_id

    # -- identity ---------------------------------------------------------
    @property
    def event_id(self) -> str:
        if self._event_id is None:
            self._event_id = compute_event_id(self.room_version, self._dict, self.format_version)
        return self._event_id

    # -- spec fields ------------------------------------------------------
    @property
    def room_id(self) -> str:
        room_id = self._dict.get("room_id")
        if room_id is None and self.room_version.room_id_is_create_event_id:
            # rooms/v12: the create event has no `room_id`; the room ID is its
            # event ID with the `!` sigil.
            return "!" + self.event_id[1:]
        return room_id

    @property
    def sender(self) -> str:
        return self._dict["sender"]

    @property
    def type(self) -> str:
        return self._dict["type"]

    @property
    def content(self) -> dict[str, Any]:
        return self._dict.get("content", {})

    @property
    def state_key(self) -> str | None:
        return self._dict.get("state_key")

    def is_state(self) -> bool:
        return "state_key" in self._dict

    @property
    def depth(self) -> int:
        return self._dict.get("depth", 0)

    @property
    def origin_server_ts(self) -> int:
        return self._dict.get("origin_server_ts", 0)

    @property
    def hashes(self) -> dict[str, str]:
        return self._dict.get("hashes", {})

    @property
    def signatures(self) -> dict[str, dict[str, str]]:
        return self._dict.get("signatures", {})

    @property
    def unsigned(self) -> dict[str, Any]:
        return self._dict.get("unsigned", {})

    @property
    def membership(self) -> str | None:
        membership = self.content.get("membership")
        return membership if isinstance(membership, str) else None

    @property
    def redacts(self) -> str | None:
        """The event a redaction redacts, or None if the key is missing.

        Room version 11 moved `redacts` into the content; older versions keep
        it at the top level. Either place is accepted so a malformed event
        never raises here.
        """
        if self.room_version.redacts_in_content:
            value = self.content.get("redacts")
        else:
            value = self._dict.get("redacts")
        return value if isinstance(value, str) else None

    def prev_event_ids(self) -> list[str]:
        return _ids(self._dict.get("prev_events", []), self.format_version)

    def auth_event_ids(self) -> list[str]:
        """The event's auth events, including an implicit create event.

        rooms/v12: the create event is never listed in `auth_events`; the
        room ID names it. It is added here (first) so that auth chains,
        fetching missing auth events and state resolution see it as the
        auth event it is. ``listed_auth_event_ids`` is the wire list.
        """
        listed = self.listed_auth_event_ids()
        if self.room_version.room_id_is_create_event_id and self.type != "m.room.create":
            room_id = self._dict.get("room_id")
            if isinstance(room_id, str) and room_id.startswith("!"):
                create_id = "$" + room_id[1:]
                if create_id not in listed:
                    return [create_id, *listed]
        return listed

    def listed_auth_event_ids(self) -> list[str]:
        """The event IDs in the event's own `auth_events` field."""
        return _ids(self._dict.get("auth_events", []), self.format_version)

    # -- helpers ----------------------------------------------------------
    def state_key_tuple(self) -> tuple[str, str]:
        """(type, state_key) for a state event."""
        state_key = self.state_key
        if state_key is None:
            raise ValueError(f"{self.event_id} is not a state event")
        return (self.type, state_key)

    def get_dict(self) -> dict[str, Any]:
        """The event as JSON (a deep copy, safe to modify), including unsigned."""
        d = copy.deepcopy(self._dict)
        if self.format_version != EventFormatVersion.V1:
            d.pop("event_id", None)
        return d

    def get_pdu_json(self) -> dict[str, Any]:
        """The event as sent over federation: without server-local unsigned data."""
        d = self.get_dict()
        unsigned = d.get("unsigned")
        if isinstance(unsigned, dict):
            for key in (
                "age_ts",
                "transaction_id",
                "redacted_because",
                "prev_content",
                "replaces_state",
            ):
                unsigned.pop(key, None)
            if not unsigned:
                d.pop("unsigned")
        return d

    def as_dict_ref(self) -> dict[str, Any]:
        """The underlying dict without a copy; callers must not modify it."""
        return self._dict

    def pruned(self) -> Event:
        """A redacted copy of this event (same ID, metadata marked redacted)."""
        meta = attrs.evolve(self.internal_metadata, redacted=True)
        event = Event(
            prune_event_dict(self.room_version, self._dict),
            self.room_version,
            self.format_version,
            meta,
            self.rejected_reason,
        )
        event._event_id = self.event_id
        return event

    def __repr__(self) -> str:
        state = f" state_key={self.state_key!r}" if self.is_state() else ""
        return f"<Event {self.event_id} {self.type}{state} sender={self.sender}>"


def _ids(refs: Any, fmt: EventFormatVersion) -> list[str]:
    """Event IDs from prev_events/auth_events in either wire form."""
    if not isinstance(refs, list):
        return []
    if fmt == EventFormatVersion.V1:
        return [r[0] for r in refs if isinstance(r, list) and r and isinstance(r[0], str)]
    return [r for r in refs if isinstance(r, str)]


def make_event_from_dict(
    event_dict: dict[str, Any],
    room_version: RoomVersion,
    format_version: EventFormatVersion | None = None,
    internal_metadata: EventInternalMetadata | None = None,
    rejected_reason: str | None = None,
) -> Event:
    """Wrap a dict as an Event (the dict is owned by the event afterwards)."""
    return Event(event_dict, room_version, format_version, internal_metadata, rejected_reason)
