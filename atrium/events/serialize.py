"""Events as clients see them (spec: client-server API "Room Event Format").

Adds ``unsigned.age``, the sender's own ``transaction_id``, for room
version 11 compatibility ``redacts`` in both places of a redaction, and
``unsigned.redacted_because`` (the redaction event) on redacted events.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from atrium.events.event import Event

# Fields of a PDU that are federation-only and never shown to clients.
_FEDERATION_ONLY = frozenset(
    (
        "auth_events",
        "prev_events",
        "hashes",
        "signatures",
        "depth",
        "origin",
        "membership",
        "prev_state",
    )
)


def _client_form(event: Event) -> tuple[dict[str, Any], dict[str, Any]]:
    """(event fields, unsigned fields) shared by every request; computed once per event."""
    cached = event.client_form_cache
    if cached is not None:
        return cached
    d = {k: v for k, v in event.as_dict_ref().items() if k not in _FEDERATION_ONLY}
    d["event_id"] = event.event_id
    # rooms/v12: the create event has no `room_id` of its own; clients get
    # the room ID like on every other event (ClientEvent requires it).
    d.setdefault("room_id", event.room_id)
    unsigned = dict(d.pop("unsigned", None) or {})
    unsigned.pop("age_ts", None)
    if event.type == "m.room.redaction":
        redacts = event.redacts
        if redacts is not None:
            # Room v11 moved `redacts` into content; clients look in both places.
            d["redacts"] = redacts
            if "redacts" not in d.get("content", {}):
                d["content"] = {**d.get("content", {}), "redacts": redacts}
    because = event.redacted_because
    if because is not None:
        # Spec: "Redactions" — clients tell redacted events by this field.
        because_fields, because_unsigned = _client_form(because)
        unsigned["redacted_because"] = {**because_fields, "unsigned": because_unsigned}
    cached = (d, unsigned)
    event.client_form_cache = cached
    return cached


def serialize_event(
    event: Event,
    now_ms: int,
    *,
    requester_user_id: str | None = None,
    requester_device_id: str | None = None,
    include_room_id: bool = True,
) -> dict[str, Any]:
    """A new dict per call (top level and unsigned); nested values are shared, do not mutate them."""
    base, base_unsigned = _client_form(event)
    d = dict(base)
    if not include_room_id:
        d.pop("room_id", None)
    unsigned = dict(base_unsigned)
    unsigned["age"] = max(0, now_ms - event.origin_server_ts)
    meta = event.internal_metadata
    if (
        meta.txn_id is not None
        and requester_user_id == event.sender
        and (requester_device_id is None or meta.device_id in (None, requester_device_id))
    ):
        unsigned["transaction_id"] = meta.txn_id
    d["unsigned"] = unsigned
    return d


def serialize_events(events: Iterable[Event], now_ms: int, **kwargs: Any) -> list[dict[str, Any]]:
    return [serialize_event(e, now_ms, **kwargs) for e in events]
