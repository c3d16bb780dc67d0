"""Building new events: lay out the PDU for the room version, hash and sign it.

Pure: everything (timestamp, depth, prev/auth events, key) comes in as
arguments; the only randomness is the opaque part of v1-format event IDs,
which can be replaced with ``event_id_generator``.

Wire forms per event format (server-server API PDU definitions pdu_v1,
pdu_v3, pdu_v4):
- v1 format (rooms 1, 2): the event carries ``event_id`` ``$opaque:server``;
  prev_events/auth_events are ``[[event_id, {"sha256": reference_hash}], ...]``.
- v2/v3 format (rooms 3+): no ``event_id`` (it is the reference hash);
  prev_events/auth_events are plain lists of event IDs.
"""

from __future__ import annotations

import copy
import secrets
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from signedjson.types import SigningKey
from unpaddedbase64 import encode_base64

from atrium.crypto.event_signing import add_hashes_and_signatures
from atrium.events.event import Event, make_event_from_dict
from atrium.events.room_versions import EventFormatVersion, RoomVersion

# PDU `depth` (pdu_v1/pdu_v3/pdu_v4 and depth_v6): "Must be less than the
# maximum value for an integer (2^63 - 1), or 2^53 - 1 from v6 on. If the
# room's depth is already at the limit, the depth must be set to the limit."
MAX_DEPTH_V1 = 2**63 - 1
MAX_DEPTH_STRICT = 2**53 - 1

_ID_ALPHABET = string.ascii_letters


def max_depth(room_version: RoomVersion) -> int:
    """The largest `depth` an event may have in this room version."""
    return MAX_DEPTH_STRICT if room_version.strict_canonicaljson else MAX_DEPTH_V1


def random_v1_event_id(server_name: str) -> str:
    """``$<18 random letters>:<server_name>`` (rooms/v1 "Event IDs")."""
    opaque = "".join(secrets.choice(_ID_ALPHABET) for _ in range(18))
    return f"${opaque}:{server_name}"


def _v1_refs(
    event_ids: Sequence[str], reference_hashes: Mapping[str, bytes | str]
) -> list[list[Any]]:
    """``[[event_id, {"sha256": ...}], ...]``; ``{}`` when the hash is unknown."""
    refs: list[list[Any]] = []
    for event_id in event_ids:
        ref = reference_hashes.get(event_id)
        if ref is None:
            refs.append([event_id, {}])
        else:
            b64 = encode_base64(ref) if isinstance(ref, bytes) else ref
            refs.append([event_id, {"sha256": b64}])
    return refs


def build_event(
    *,
    room_version: RoomVersion,
    type: str,
    sender: str,
    room_id: str | None,
    content: Mapping[str, Any],
    prev_event_ids: Sequence[str],
    auth_event_ids: Sequence[str],
    depth: int,
    origin_server_ts: int,
    server_name: str,
    signing_key: SigningKey,
    state_key: str | None = None,
    redacts: str | None = None,
    unsigned: Mapping[str, Any] | None = None,
    reference_hashes: Mapping[str, bytes | str] | None = None,
    event_id_generator: Callable[[], str] | None = None,
) -> Event:
    """A new event for ``room_version``, with its content hash and our signature.

    - ``redacts`` (only for m.room.redaction) goes to the top level before
      room version 11 and into ``content`` from v11 on (rooms/v11 "Moving the
      redacts property of m.room.redaction events to a content property").
    - ``depth`` is clamped to the room version's maximum (see ``max_depth``).
    - ``reference_hashes`` (event ID -> sha256 reference hash, raw bytes or
      unpadded base64) is only used for v1-format prev/auth event pairs.
    - ``event_id_generator`` makes the ID of a v1-format event; the default
      is ``random_v1_event_id(server_name)``. Ignored for other formats.
    - ``unsigned`` is copied into the event; it is neither hashed nor signed.
    - rooms/v12: the create event has no `room_id` (its ID makes the room
      ID), so ``room_id`` must be None for it; every other event needs one.

    Inputs are copied, never modified.
    """
    if redacts is not None and type != "m.room.redaction":
        raise ValueError(f"`redacts` given for a {type} event")

    implicit_room_id = room_version.room_id_is_create_event_id and type == "m.room.create"
    if (room_id is None) != implicit_room_id:
        raise ValueError(
            f"room_id {room_id!r} given for a {type} event in room version "
            f"{room_version.identifier}"
        )

    event_content = copy.deepcopy(dict(content))
    event_dict: dict[str, Any] = {
        "type": type,
        "sender": sender,
        "content": event_content,
        "depth": min(depth, max_depth(room_version)),
        "origin_server_ts": origin_server_ts,
    }
    if room_id is not None:
        event_dict["room_id"] = room_id
    if state_key is not None:
        event_dict["state_key"] = state_key
    if redacts is not None:
        if room_version.redacts_in_content:
            event_content["redacts"] = redacts
        else:
            event_dict["redacts"] = redacts

    if room_version.event_format == EventFormatVersion.V1:
        hashes = reference_hashes or {}
        event_dict["prev_events"] = _v1_refs(prev_event_ids, hashes)
        event_dict["auth_events"] = _v1_refs(auth_event_ids, hashes)
        make_id = event_id_generator or (lambda: random_v1_event_id(server_name))
        event_dict["event_id"] = make_id()
    else:
        event_dict["prev_events"] = list(prev_event_ids)
        event_dict["auth_events"] = list(auth_event_ids)

    add_hashes_and_signatures(room_version, event_dict, server_name, signing_key)
    # `unsigned` is added after signing only for clarity: it would be ignored
    # by both the content hash and the signature anyway.
    if unsigned:
        event_dict["unsigned"] = copy.deepcopy(dict(unsigned))
    return make_event_from_dict(event_dict, room_version)
