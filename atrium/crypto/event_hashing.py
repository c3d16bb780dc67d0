"""Content hashes, reference hashes and event IDs (spec: server-server API,
"Calculating the content hash for an event" and "Calculating the reference
hash for an event"; rooms/v3 and v4 "Event IDs")."""

from __future__ import annotations

import hashlib
from typing import Any

from canonicaljson import encode_canonical_json
from unpaddedbase64 import decode_base64, encode_base64

from atrium.events.redaction import prune_event_dict
from atrium.events.room_versions import EventFormatVersion, RoomVersion

# Keys that never take part in the content hash.
_NOT_HASHED = ("unsigned", "signatures", "hashes", "outlier", "destinations", "age_ts")


def compute_content_hash(event_dict: dict[str, Any]) -> bytes:
    """sha256 over the canonical JSON of the event without its non-hashed keys."""
    hashed = {k: v for k, v in event_dict.items() if k not in _NOT_HASHED}
    return hashlib.sha256(encode_canonical_json(hashed)).digest()


def check_content_hash(event_dict: dict[str, Any]) -> bool:
    """True when the event's `hashes.sha256` matches its content."""
    hashes = event_dict.get("hashes")
    if not isinstance(hashes, dict):
        return False
    expected = hashes.get("sha256")
    if not isinstance(expected, str):
        return False
    try:
        expected_bytes = decode_base64(expected)
    except Exception:
        return False
    return expected_bytes == compute_content_hash(event_dict)


def compute_reference_hash(room_version: RoomVersion, event_dict: dict[str, Any]) -> bytes:
    """sha256 over the canonical JSON of the redacted event, minus signatures and unsigned."""
    pruned = prune_event_dict(room_version, event_dict)
    pruned.pop("signatures", None)
    pruned.pop("unsigned", None)
    return hashlib.sha256(encode_canonical_json(pruned)).digest()


def compute_event_id(
    room_version: RoomVersion,
    event_dict: dict[str, Any],
    format_version: EventFormatVersion | None = None,
) -> str:
    """The event ID of a v2/v3 format event, derived from its reference hash.

    ``format_version`` is the event's stored format; it defaults to the one
    the room version uses for new events.
    """
    fmt = room_version.event_format if format_version is None else format_version
    digest = compute_reference_hash(room_version, event_dict)
    if fmt == EventFormatVersion.V2:
        return "$" + encode_base64(digest)
    if fmt == EventFormatVersion.V3:
        return "$" + encode_base64(digest, urlsafe=True)
    raise ValueError("v1 format events carry their own event_id")
