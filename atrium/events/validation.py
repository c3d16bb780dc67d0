"""Structural validation of PDUs and strict parsing of JSON request bodies.

``validate_event`` checks what can be checked on the event alone, before
signatures, hashes and auth rules:
- the PDU schema of the room version (server-server API definitions pdu_v1,
  pdu_v3, pdu_v4, pdu_v11: required fields and their types);
- client-server API "Size limits": 65536 bytes of canonical JSON for the
  whole event, 255 bytes for `sender`, `room_id`, `type`, `state_key`,
  `event_id`;
- appendices "Identifier Grammar" for `sender` and `room_id`;
- rooms v6+ "Canonical JSON": no floats, integers within
  [-(2**53)+1, (2**53)-1], anywhere in the event.

Sender localparts are checked with the *historical* grammar: the appendix
says servers MUST accept any localpart without ``:`` or NUL in events.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from canonicaljson import encode_canonical_json

from atrium.events.room_versions import EventFormatVersion, RoomVersion

MAX_PDU_SIZE = 65536
MAX_ID_BYTES = 255
MAX_KEY_BYTES = 255
# appendices "Canonical JSON".
CANONICALJSON_MAX_INT = 2**53 - 1
CANONICALJSON_MIN_INT = -CANONICALJSON_MAX_INT
# origin_server_ts is "format: int64" and depth is bounded by 2^63 - 1 in
# every PDU definition; the database stores both as BIGINT.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# pdu_v1/pdu_v3/pdu_v4 `prev_events`: "Must contain less than or equal to 20
# events"; `auth_events`: "less than or equal to 10".
MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10

# Request bodies nested deeper than this are refused: the JSON parser would
# accept several hundred levels, but copying, freezing and re-encoding such a
# value recurses once or more per level and would exhaust Python's stack
# later, in the middle of handling the request. Real Matrix JSON (event
# content, filters, keys, push rules) is a handful of levels deep.
MAX_JSON_DEPTH = 100

M_BAD_JSON = "M_BAD_JSON"
M_TOO_LARGE = "M_TOO_LARGE"
M_INVALID_PARAM = "M_INVALID_PARAM"
M_NOT_JSON = "M_NOT_JSON"


class EventValidationError(Exception):
    """An event breaks a structural rule; ``errcode`` is the Matrix error code to use."""

    def __init__(self, errcode: str, message: str) -> None:
        super().__init__(message)
        self.errcode = errcode
        self.message = message


class StrictJSONError(ValueError):
    """A request body is not strictly valid JSON (``errcode`` M_NOT_JSON)."""

    errcode = M_NOT_JSON


class JSONTooDeepError(StrictJSONError):
    """Valid JSON, but nested deeper than MAX_JSON_DEPTH (``errcode`` M_BAD_JSON)."""

    errcode = M_BAD_JSON


# -- identifier grammar (appendices "Identifier Grammar") -------------------

_DNS_NAME_RE = re.compile(r"^[A-Za-z0-9.\-]{1,255}$")
_IPV6_CHARS_RE = re.compile(r"^[0-9A-Fa-f:.]{2,45}$")
_PORT_RE = re.compile(r"^[0-9]{1,5}$")
_STRICT_LOCALPART_RE = re.compile(r"^[a-z0-9._=\-/+]+$")


def is_valid_server_name(server_name: str) -> bool:
    """``hostname [":" port]``, hostname = IPv4 / "[" IPv6 "]" / dns-name."""
    if server_name.startswith("["):
        end = server_name.find("]")
        if end == -1:
            return False
        literal, rest = server_name[1:end], server_name[end + 1 :]
        if not _IPV6_CHARS_RE.match(literal):
            return False
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            return False
    else:
        host, sep, port = server_name.partition(":")
        # A dotted-quad IPv4 literal is also a dns-name by the grammar.
        if not _DNS_NAME_RE.match(host):
            return False
        rest = sep + port
    if rest:
        return rest.startswith(":") and bool(_PORT_RE.match(rest[1:]))
    return True


def _split_id(identifier: str, sigil: str) -> tuple[str, str] | None:
    if not identifier.startswith(sigil):
        return None
    localpart, sep, domain = identifier[1:].partition(":")
    if not sep:
        return None
    return localpart, domain


def is_valid_user_id(user_id: str, *, historical: bool = True) -> bool:
    """``@localpart:server_name``.

    ``historical=True`` (what events must accept) allows any localpart
    without NUL (``:`` cannot occur: the first one ends the localpart),
    including an empty one; ``historical=False`` is the grammar for new
    user IDs (non-empty, ``a-z 0-9 . _ = - / +``). Both cap the ID at 255
    bytes.
    """
    parts = _split_id(user_id, "@")
    if parts is None or len(user_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        return False
    localpart, domain = parts
    if historical:
        if "\x00" in localpart or _has_surrogate(localpart):
            return False
    elif not _STRICT_LOCALPART_RE.match(localpart):
        return False
    return is_valid_server_name(domain)


# rooms/v12 room IDs: "!" + the create event's reference hash, 32 bytes in
# unpadded URL-safe base64 (appendices "Room IDs"; rooms/v4 "Event IDs").
_HASH_ROOM_ID_RE = re.compile(r"![A-Za-z0-9_-]{43}\Z")


def has_room_id_shape(room_id: str) -> bool:
    """The loose check request handlers make on a room ID from a client:
    ``!opaque:server`` (rooms 1-11) or ``!<reference hash>`` (rooms 12+).
    Whether the room exists is for the caller to find out."""
    return room_id.startswith("!") and (":" in room_id or bool(_HASH_ROOM_ID_RE.match(room_id)))


def is_valid_room_id(room_id: str, room_version: RoomVersion | None = None) -> bool:
    """``!opaque_id:server_name`` (room versions 1-11), at most 255 bytes,
    or ``!<reference hash>`` (room version 12 on).

    Without ``room_version`` either form is accepted.
    """
    hash_form = room_version is None or room_version.room_id_is_create_event_id
    if hash_form and _HASH_ROOM_ID_RE.match(room_id):
        return True
    if room_version is not None and room_version.room_id_is_create_event_id:
        return False
    parts = _split_id(room_id, "!")
    if parts is None or len(room_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        return False
    localpart, domain = parts
    if not localpart or "\x00" in localpart or _has_surrogate(localpart):
        return False
    return is_valid_server_name(domain)


def _has_surrogate(s: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in s)


# -- event validation --------------------------------------------------------


def _byte_len(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass"))


def _require(
    event_dict: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str
) -> Any:
    if key not in event_dict:
        raise EventValidationError(M_BAD_JSON, f"event has no `{key}`")
    value = event_dict[key]
    # bool is an int in Python but never a JSON integer.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise EventValidationError(M_BAD_JSON, f"`{key}` must be {what}")
    return value


def _check_int64(key: str, value: int) -> None:
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise EventValidationError(M_BAD_JSON, f"`{key}` is out of the 64-bit integer range")


def _check_event_refs(key: str, refs: list[Any], fmt: EventFormatVersion, limit: int) -> None:
    if len(refs) > limit:
        raise EventValidationError(M_BAD_JSON, f"`{key}` lists {len(refs)} events, at most {limit}")
    for ref in refs:
        if fmt == EventFormatVersion.V1:
            # pdu_v1: each entry is [event_id, {hash algorithm: hash}].
            if not (isinstance(ref, list) and len(ref) == 2 and isinstance(ref[1], dict)):
                raise EventValidationError(
                    M_BAD_JSON, f"`{key}` entries must be [event_id, hashes]"
                )
            event_id = ref[0]
        else:
            event_id = ref
        if not isinstance(event_id, str) or not event_id.startswith("$"):
            raise EventValidationError(
                M_BAD_JSON, f"`{key}` holds something that is not an event ID"
            )
        if _byte_len(event_id) > MAX_ID_BYTES:
            raise EventValidationError(M_TOO_LARGE, f"an event ID in `{key}` is over 255 bytes")


def _check_strict_numbers(value: Any, path: str) -> None:
    """rooms v6+ "Canonical JSON": integers in range, and no floats at all."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        if isinstance(item, int):
            if not CANONICALJSON_MIN_INT <= item <= CANONICALJSON_MAX_INT:
                raise EventValidationError(
                    M_BAD_JSON, f"integer at {where} is outside [-(2**53)+1, (2**53)-1]"
                )
        elif isinstance(item, float):
            raise EventValidationError(
                M_BAD_JSON, f"float at {where}: not allowed in canonical JSON"
            )
        elif isinstance(item, dict):
            stack.extend((v, f"{where}.{k}") for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))


def validate_event(room_version: RoomVersion, event_dict: Mapping[str, Any]) -> None:
    """Raise EventValidationError if the PDU breaks a structural rule (see module doc).

    ``event_dict`` is the federation form of the event (as received, or as
    built by ``atrium.events.builder``), including `hashes` and `signatures`.
    """
    if not isinstance(event_dict, Mapping):
        raise EventValidationError(M_BAD_JSON, "event is not a JSON object")
    fmt = room_version.event_format

    _require(event_dict, "type", str, "a string")
    if room_version.room_id_is_create_event_id and event_dict.get("type") == "m.room.create":
        # rooms/v12: the create event has no room_id (auth rule 1.2 rejects
        # one that has); its own ID makes the room ID.
        room_id = None
    else:
        room_id = _require(event_dict, "room_id", str, "a string")
    sender = _require(event_dict, "sender", str, "a string")
    _require(event_dict, "content", dict, "an object")
    depth = _require(event_dict, "depth", int, "an integer")
    ts = _require(event_dict, "origin_server_ts", int, "an integer")
    prev_events = _require(event_dict, "prev_events", list, "a list")
    auth_events = _require(event_dict, "auth_events", list, "a list")
    hashes = _require(event_dict, "hashes", dict, "an object")
    signatures = _require(event_dict, "signatures", dict, "an object")

    if not isinstance(hashes.get("sha256"), str):
        raise EventValidationError(M_BAD_JSON, "`hashes.sha256` must be a string")
    for server, by_key in signatures.items():
        if not isinstance(by_key, dict) or not all(isinstance(s, str) for s in by_key.values()):
            raise EventValidationError(
                M_BAD_JSON, f"`signatures.{server}` must map key IDs to strings"
            )
    if "state_key" in event_dict and not isinstance(event_dict["state_key"], str):
        raise EventValidationError(M_BAD_JSON, "`state_key` must be a string")
    # These are stored as database text, which cannot hold NUL (PostgreSQL).
    for key in ("type", "state_key", "redacts"):
        if isinstance(event_dict.get(key), str) and "\x00" in event_dict[key]:
            raise EventValidationError(M_BAD_JSON, f"`{key}` must not contain NUL")
    if "unsigned" in event_dict and not isinstance(event_dict["unsigned"], dict):
        raise EventValidationError(M_BAD_JSON, "`unsigned` must be an object")
    if "redacts" in event_dict and not isinstance(event_dict["redacts"], str):
        raise EventValidationError(M_BAD_JSON, "`redacts` must be a string")
    content_redacts = event_dict["content"].get("redacts")
    if (
        room_version.redacts_in_content
        and event_dict.get("type") == "m.room.redaction"
        and isinstance(content_redacts, str)
        and "\x00" in content_redacts
    ):
        # v11+: `redacts` lives in the content and is stored as text too.
        raise EventValidationError(M_BAD_JSON, "`redacts` must not contain NUL")
    if depth < 0:
        raise EventValidationError(M_BAD_JSON, "`depth` must not be negative")
    _check_int64("depth", depth)
    _check_int64("origin_server_ts", ts)

    event_id = event_dict.get("event_id")
    if fmt == EventFormatVersion.V1 and not isinstance(event_id, str):
        raise EventValidationError(M_BAD_JSON, "v1 format event must have a string `event_id`")

    # client-server API "Size limits": per-key limits.
    for key in ("sender", "room_id", "type", "state_key", "event_id"):
        value = event_dict.get(key)
        if isinstance(value, str) and _byte_len(value) > MAX_KEY_BYTES:
            raise EventValidationError(M_TOO_LARGE, f"`{key}` is over {MAX_KEY_BYTES} bytes")

    _check_event_refs("prev_events", prev_events, fmt, MAX_PREV_EVENTS)
    _check_event_refs("auth_events", auth_events, fmt, MAX_AUTH_EVENTS)

    if not is_valid_user_id(sender):
        raise EventValidationError(M_INVALID_PARAM, f"`sender` {sender!r} is not a valid user ID")
    if room_id is not None and not is_valid_room_id(room_id, room_version):
        raise EventValidationError(M_INVALID_PARAM, f"`room_id` {room_id!r} is not a valid room ID")
    if fmt == EventFormatVersion.V1 and isinstance(event_id, str):
        # rooms/v1 "Event IDs": $opaque_id:domain.
        if not event_id.startswith("$") or ":" not in event_id:
            raise EventValidationError(
                M_INVALID_PARAM, f"`event_id` {event_id!r} is not $opaque:domain"
            )

    if room_version.strict_canonicaljson:
        _check_strict_numbers(dict(event_dict), "event")

    try:
        encoded = encode_canonical_json(dict(event_dict))
    except (TypeError, ValueError) as e:
        raise EventValidationError(M_BAD_JSON, f"event cannot be encoded as JSON: {e}") from e
    if len(encoded) > MAX_PDU_SIZE:
        raise EventValidationError(
            M_TOO_LARGE, f"event is {len(encoded)} bytes of canonical JSON, over {MAX_PDU_SIZE}"
        )


# -- strict JSON request bodies ------------------------------------------


def _reject_constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not valid JSON")


def _check_encodable(value: Any) -> None:
    """Reject lone surrogates (from \\ud800-style escapes), numbers such as
    1e400 that Python reads as infinity, and nesting deeper than
    MAX_JSON_DEPTH."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise StrictJSONError("number is too large to represent")
        if isinstance(item, str):
            if _has_surrogate(item):
                raise StrictJSONError("string holds an unpaired UTF-16 surrogate")
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise JSONTooDeepError(f"JSON is nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(item, dict):
                stack.extend((k, depth) for k in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)


def parse_strict_json(data: bytes) -> Any:
    """Parse a JSON request body, refusing what JSON (RFC 8259) does not allow.

    Rejects invalid UTF-8, NaN/Infinity/-Infinity (which Python's json module
    would otherwise accept), unpaired surrogate escapes, and anything that is
    not JSON; raises StrictJSONError (a ValueError) with the reason.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StrictJSONError(f"body is not valid UTF-8: {e}") from e
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except StrictJSONError:
        raise
    except RecursionError as e:
        raise JSONTooDeepError(f"JSON is nested deeper than {MAX_JSON_DEPTH} levels") from e
    except ValueError as e:
        raise StrictJSONError(f"body is not valid JSON: {e}") from e
    _check_encodable(value)
    return value
