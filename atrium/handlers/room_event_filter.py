"""RoomEventFilter (spec: client-server API "Filtering", the RoomEventFilter
object) as used by /messages and /context.

``parse_room_event_filter`` validates the JSON (M_NOT_JSON / M_BAD_JSON, never
a 500); a ``RoomEventFilter`` then

- hands the database what it can apply exactly (``sql_filter``: exact types
  and senders), so pages fill from the index, and
- checks every event fully in Python (``matches``): type wildcards (``*``
  matches any run of characters), ``contains_url``, rooms.

The ``not_*`` lists always win over their inclusive counterparts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

import attrs

from atrium.errors import BadJson, NotJson
from atrium.events.event import Event
from atrium.storage.stores.pagination import SqlEventFilter

_LIST_FIELDS = ("types", "not_types", "senders", "not_senders", "rooms", "not_rooms")
_BOOL_FIELDS = ("contains_url", "lazy_load_members", "include_redundant_members")


def _pattern(types: Collection[str]) -> re.Pattern[str] | None:
    if not types:
        return None
    return re.compile("|".join(re.escape(t).replace(r"\*", ".*") for t in types))


@attrs.frozen
class RoomEventFilter:
    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()
    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    contains_url: bool | None = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    limit: int | None = None
    _types_re: re.Pattern[str] | None = attrs.field(init=False, eq=False, repr=False)
    _not_types_re: re.Pattern[str] | None = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_types_re", _pattern(self.types or ()))
        object.__setattr__(self, "_not_types_re", _pattern(self.not_types))

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    def sql_filter(self) -> SqlEventFilter:
        """What the database can apply: the wildcard-free type and sender lists.

        A ``types`` list with a wildcard is left to ``matches`` entirely (the
        SQL LIKE of SQLite ignores case, event types do not).
        """
        types = self.types
        if types is not None and any("*" in t for t in types):
            types = None
        return SqlEventFilter(
            types=types,
            not_types=tuple(t for t in self.not_types if "*" not in t),
            senders=self.senders,
            not_senders=self.not_senders,
        )

    def matches(self, event: Event) -> bool:
        if not self.allows_room(event.room_id):
            return False
        sender = event.sender
        if sender in self.not_senders or (self.senders is not None and sender not in self.senders):
            return False
        event_type = event.type
        if self._not_types_re is not None and self._not_types_re.fullmatch(event_type):
            return False
        if self.types is not None and (
            self._types_re is None or not self._types_re.fullmatch(event_type)
        ):
            return False
        if self.contains_url is not None:
            has_url = isinstance(event.content.get("url"), str)
            if has_url != self.contains_url:
                return False
        return True

    def filter(self, events: list[Event]) -> list[Event]:
        return [e for e in events if self.matches(e)]


EMPTY_FILTER = RoomEventFilter()


def room_event_filter_from_dict(data: Any) -> RoomEventFilter:
    """A RoomEventFilter from decoded JSON; M_BAD_JSON when a field has the wrong shape."""
    if not isinstance(data, dict):
        raise BadJson("The filter must be a JSON object")
    kwargs: dict[str, Any] = {}
    for name in _LIST_FIELDS:
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, list) or not all(
            isinstance(v, str) and "\x00" not in v for v in value
        ):
            raise BadJson(f"Filter field {name!r} must be a list of strings (without NUL)")
        kwargs[name] = tuple(value)
    for name in _BOOL_FIELDS:
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, bool):
            raise BadJson(f"Filter field {name!r} must be a boolean")
        kwargs[name] = value
    limit = data.get("limit")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise BadJson("Filter field 'limit' must be a positive integer")
        kwargs["limit"] = limit
    return RoomEventFilter(**kwargs)


def parse_room_event_filter(text: str | None) -> RoomEventFilter:
    """The ``filter`` query parameter of /messages and /context (JSON text)."""
    if text is None or not text.strip():
        return EMPTY_FILTER
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise NotJson("The filter is not valid JSON") from None
    return room_event_filter_from_dict(data)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
