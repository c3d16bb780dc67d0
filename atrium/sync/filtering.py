"""Filters: what a client asks /sync (and other event APIs) to leave out.

Spec: client-server API "Filtering" and the ``Filter`` / ``RoomFilter`` /
``EventFilter`` / ``RoomEventFilter`` schemas of ``POST /user/{userId}/filter``.

- ``validate_filter_json`` checks a filter against the spec's schema
  (jsonschema), raising ``FilterError`` with a readable message.
- ``Filter`` is the parsed form; ``Filter.from_json`` validates too.
  Sections read their part: ``filter.presence``, ``filter.account_data``,
  ``filter.room.ephemeral``, ``filter.room.account_data`` (each an
  ``EventFilter`` with ``check``/``filter``), ``filter.room.timeline`` and
  ``filter.room.state`` for the rooms section.
- Type patterns may contain ``*`` (any sequence of characters). Exclusions
  (``not_*``) win over inclusions; an absent inclusion list includes all.

Unknown keys are ignored (the schema does not forbid them), so a filter
written for a newer spec still works.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, TypeVar

import jsonschema

# Timeline limit when the filter gives none, and the most we ever return.
DEFAULT_TIMELINE_LIMIT = 10
MAX_LIMIT = 1000

T = TypeVar("T")

_STRINGS = {"type": "array", "items": {"type": "string"}}
_USER_IDS = {"type": "array", "items": {"type": "string", "pattern": "^@"}}
_ROOM_IDS = {"type": "array", "items": {"type": "string", "pattern": "^!"}}

# definitions/event_filter.yaml
_EVENT_FILTER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "limit": {"type": "integer", "minimum": 0},
        "types": _STRINGS,
        "not_types": _STRINGS,
        "senders": _USER_IDS,
        "not_senders": _USER_IDS,
    },
}
# definitions/room_event_filter.yaml (EventFilter plus room fields)
_ROOM_EVENT_FILTER: dict[str, Any] = {
    "type": "object",
    "properties": {
        **_EVENT_FILTER["properties"],
        "rooms": _ROOM_IDS,
        "not_rooms": _ROOM_IDS,
        "contains_url": {"type": "boolean"},
        "lazy_load_members": {"type": "boolean"},
        "include_redundant_members": {"type": "boolean"},
        "unread_thread_notifications": {"type": "boolean"},
    },
}
# definitions/sync_filter.yaml
FILTER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event_fields": _STRINGS,
        "event_format": {"enum": ["client", "federation"]},
        "presence": _EVENT_FILTER,
        "account_data": _EVENT_FILTER,
        "room": {
            "type": "object",
            "properties": {
                "rooms": _ROOM_IDS,
                "not_rooms": _ROOM_IDS,
                "include_leave": {"type": "boolean"},
                "ephemeral": _ROOM_EVENT_FILTER,
                "state": _ROOM_EVENT_FILTER,
                "timeline": _ROOM_EVENT_FILTER,
                "account_data": _ROOM_EVENT_FILTER,
            },
        },
    },
}

_VALIDATOR = jsonschema.Draft202012Validator(FILTER_SCHEMA)


class FilterError(ValueError):
    """A filter that does not match the spec's schema."""


def validate_filter_json(filter_json: Any) -> None:
    """Raise FilterError unless ``filter_json`` is a valid Filter object."""
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(filter_json))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "filter"
        raise FilterError(f"Invalid filter at {where}: {error.message[:200]}")


@lru_cache(maxsize=4096)
def _pattern(glob: str) -> re.Pattern[str]:
    """A type pattern: ``*`` matches any sequence, everything else is literal."""
    return re.compile("".join(".*" if c == "*" else re.escape(c) for c in glob) + r"\Z")


def _matches_any(value: str, patterns: tuple[str, ...]) -> bool:
    for p in patterns:
        if "*" in p:
            if _pattern(p).match(value):
                return True
        elif p == value:
            return True
    return False


def _field(event: Any, name: str) -> Any:
    """A top-level field of an Event (attribute) or of an event dict."""
    if isinstance(event, Mapping):
        return event.get(name)
    return getattr(event, name, None)


def _tuple(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


class EventFilter:
    """An EventFilter or RoomEventFilter: which events of one kind to keep."""

    def __init__(self, spec: Mapping[str, Any] | None = None, default_limit: int = 10) -> None:
        spec = spec or {}
        self.spec = spec
        limit = spec.get("limit")
        self.limit: int = default_limit if limit is None else max(0, min(int(limit), MAX_LIMIT))
        self.types = _tuple(spec.get("types"))
        self.not_types = _tuple(spec.get("not_types")) or ()
        self.senders = _tuple(spec.get("senders"))
        self.not_senders = frozenset(spec.get("not_senders") or ())
        self.rooms = _tuple(spec.get("rooms"))
        self.not_rooms = frozenset(spec.get("not_rooms") or ())
        self.contains_url: bool | None = spec.get("contains_url")
        self.lazy_load_members = bool(spec.get("lazy_load_members", False))
        self.include_redundant_members = bool(spec.get("include_redundant_members", False))
        self.unread_thread_notifications = bool(spec.get("unread_thread_notifications", False))
        # A filter that keeps everything lets callers skip the per-event work.
        self.is_trivial = (
            self.types is None
            and not self.not_types
            and self.senders is None
            and not self.not_senders
            and self.rooms is None
            and not self.not_rooms
            and self.contains_url is None
        )
        self._sender_set = frozenset(self.senders) if self.senders is not None else None
        self._room_set = frozenset(self.rooms) if self.rooms is not None else None

    def allows_type(self, event_type: str) -> bool:
        if self.not_types and _matches_any(event_type, self.not_types):
            return False
        return self.types is None or _matches_any(event_type, self.types)

    def allows_sender(self, sender: str | None) -> bool:
        if sender is not None and sender in self.not_senders:
            return False
        return self._sender_set is None or sender in self._sender_set

    def allows_room(self, room_id: str | None) -> bool:
        if room_id is not None and room_id in self.not_rooms:
            return False
        return self._room_set is None or room_id in self._room_set

    def check(self, event: Any) -> bool:
        """Whether ``event`` (an Event or an event dict) passes this filter.

        The "sender" of presence events is the user they describe, which
        presence events carry as their top-level ``sender`` too.
        """
        if self.is_trivial:
            return True
        event_type = _field(event, "type")
        if not isinstance(event_type, str) or not self.allows_type(event_type):
            return False
        if not self.allows_sender(_field(event, "sender")):
            return False
        room_id = _field(event, "room_id")
        if room_id is not None and not self.allows_room(room_id):
            return False
        if self.contains_url is not None:
            content = _field(event, "content")
            has_url = isinstance(content, Mapping) and isinstance(content.get("url"), str)
            if has_url != self.contains_url:
                return False
        return True

    def filter(self, events: Iterable[T]) -> list[T]:
        if self.is_trivial:
            return list(events)
        return [e for e in events if self.check(e)]


class RoomFilter:
    """The ``room`` part of a Filter: which rooms, and a filter per room section."""

    def __init__(self, spec: Mapping[str, Any] | None = None) -> None:
        spec = spec or {}
        self.spec = spec
        self.rooms = _tuple(spec.get("rooms"))
        self.not_rooms = frozenset(spec.get("not_rooms") or ())
        self._room_set = frozenset(self.rooms) if self.rooms is not None else None
        self.include_leave = bool(spec.get("include_leave", False))
        self.timeline = EventFilter(spec.get("timeline"), DEFAULT_TIMELINE_LIMIT)
        self.state = EventFilter(spec.get("state"), MAX_LIMIT)
        self.ephemeral = EventFilter(spec.get("ephemeral"), MAX_LIMIT)
        self.account_data = EventFilter(spec.get("account_data"), MAX_LIMIT)

    def allows_room(self, room_id: str) -> bool:
        """The room-level rooms/not_rooms, applied before any section's filter."""
        if room_id in self.not_rooms:
            return False
        return self._room_set is None or room_id in self._room_set


class Filter:
    """A parsed Filter (spec: definitions/sync_filter.yaml)."""

    def __init__(self, filter_json: Mapping[str, Any] | None = None) -> None:
        filter_json = filter_json or {}
        self.filter_json = filter_json
        self.room = RoomFilter(filter_json.get("room"))
        self.presence = EventFilter(filter_json.get("presence"), MAX_LIMIT)
        self.account_data = EventFilter(filter_json.get("account_data"), MAX_LIMIT)
        fields = filter_json.get("event_fields")
        self.event_fields: tuple[str, ...] | None = None if fields is None else tuple(fields)
        self.event_format: str = filter_json.get("event_format", "client")

    @classmethod
    def from_json(cls, filter_json: Any) -> Filter:
        """Validate (FilterError if invalid) and parse."""
        validate_filter_json(filter_json)
        return cls(filter_json)

    # Shortcuts the rooms section reads.
    @property
    def timeline_limit(self) -> int:
        return self.room.timeline.limit

    @property
    def lazy_load_members(self) -> bool:
        # Spec (GET /sync): lazy-loading applies to the `state` part of the
        # RoomFilter; clients commonly set it on `timeline` too.
        return self.room.state.lazy_load_members or self.room.timeline.lazy_load_members

    @property
    def include_leave(self) -> bool:
        return self.room.include_leave

    def allows_room(self, room_id: str) -> bool:
        return self.room.allows_room(room_id)

    def filter_presence(self, events: Iterable[T]) -> list[T]:
        return self.presence.filter(events)

    def filter_account_data(self, events: Iterable[T]) -> list[T]:
        return self.account_data.filter(events)

    def filter_room_ephemeral(self, events: Iterable[T]) -> list[T]:
        return self.room.ephemeral.filter(events)

    def filter_room_account_data(self, events: Iterable[T]) -> list[T]:
        return self.room.account_data.filter(events)

    def apply_event_fields(self, event: dict[str, Any]) -> dict[str, Any]:
        """Keep only ``event_fields`` (dot-separated paths, spec appendices) of an event."""
        if self.event_fields is None:
            return event
        return only_fields(event, self.event_fields)


DEFAULT_FILTER = Filter()


def _split_path(path: str) -> list[str]:
    """Dot-separated property path; ``\\.`` is a literal dot (spec appendices)."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in path:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def only_fields(event: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """A copy of ``event`` with only the given dot-separated paths."""
    result: dict[str, Any] = {}
    for path in fields:
        parts = _split_path(path)
        source: Any = event
        for part in parts[:-1]:
            source = source.get(part) if isinstance(source, Mapping) else None
            if source is None:
                break
        if not isinstance(source, Mapping) or parts[-1] not in source:
            continue
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = source[parts[-1]]
    return result
