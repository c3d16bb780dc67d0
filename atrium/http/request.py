"""Parsing what a servlet needs from a request: JSON bodies, query parameters,
access tokens. Every failure is a MatrixError, never an exception a client
would see as a 500."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.errors import BadJson, InvalidParam, MissingParam, NotJson, TooLarge
from atrium.events.validation import JSONTooDeepError, parse_strict_json


def decode_json(raw: bytes) -> Any:
    """Strict JSON (RFC 8259): UTF-8 only; NaN, Infinity, numbers too large
    for a float (1e400) and unpaired surrogate escapes (``"\\ud800"``) are
    refused: none of them could be stored or encoded again later. JSON
    nested deeper than MAX_JSON_DEPTH is M_BAD_JSON."""
    try:
        return parse_strict_json(raw)
    except JSONTooDeepError as e:
        raise BadJson(str(e)) from None
    except ValueError as e:
        raise NotJson(f"Content not JSON: {e}") from None


def read_body(request: Request, max_size: int) -> bytes:
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    raw = content.read(max_size + 1)
    if len(raw) > max_size:
        raise TooLarge(f"Request body is over the {max_size} byte limit")
    return raw


def parse_json_object(request: Request, max_size: int, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object (M_NOT_JSON / M_BAD_JSON otherwise)."""
    raw = read_body(request, max_size)
    if not raw.strip():
        if allow_empty:
            return {}
        raise NotJson("Content not JSON")
    body = decode_json(raw)
    if not isinstance(body, dict):
        raise BadJson("Content must be a JSON object")
    return body


def query_string(
    request: Request,
    name: str,
    default: str | None = None,
    required: bool = False,
    allowed: tuple[str, ...] | None = None,
) -> str | None:
    values = (request.args or {}).get(name.encode("ascii"))
    if not values:
        if required:
            raise MissingParam(f"Missing query parameter {name!r}")
        return default
    try:
        value = values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidParam(f"Query parameter {name!r} is not valid UTF-8") from None
    if allowed is not None and value not in allowed:
        raise InvalidParam(f"Query parameter {name!r} must be one of {', '.join(allowed)}")
    return value


def query_strings(request: Request, name: str) -> list[str]:
    values = (request.args or {}).get(name.encode("ascii")) or []
    try:
        return [v.decode("utf-8") for v in values]
    except UnicodeDecodeError:
        raise InvalidParam(f"Query parameter {name!r} is not valid UTF-8") from None


def query_int(
    request: Request,
    name: str,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    value = query_string(request, name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise InvalidParam(f"Query parameter {name!r} must be an integer") from None
    if minimum is not None and number < minimum:
        raise InvalidParam(f"Query parameter {name!r} must be at least {minimum}")
    if maximum is not None and number > maximum:
        number = maximum
    return number


def query_bool(request: Request, name: str, default: bool = False) -> bool:
    value = query_string(request, name)
    if value is None:
        return default
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise InvalidParam(f"Query parameter {name!r} must be true or false")


def access_token_from(request: Request) -> str | None:
    """The access token: ``Authorization: Bearer`` header or ``access_token`` query."""
    raw = request.getHeader(b"authorization")
    if raw:
        header = raw.decode("latin-1") if isinstance(raw, bytes) else raw
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    values = (request.args or {}).get(b"access_token")
    if values:
        try:
            return values[0].decode("ascii")
        except UnicodeDecodeError:
            return None
    return None


def require_keys(body: dict[str, Any], **types: type | tuple[type, ...]) -> None:
    """Check required keys of a JSON body and their types (M_BAD_JSON / M_MISSING_PARAM)."""
    for key, typ in types.items():
        if key not in body:
            raise MissingParam(f"Missing {key!r}")
        if not isinstance(body[key], typ) or (typ is int and isinstance(body[key], bool)):
            raise BadJson(f"{key!r} has the wrong type")


def optional_text(body: dict[str, Any], key: str, max_bytes: int = 1024) -> str | None:
    """An optional free-text field stored as a database string (display names,
    status messages): None, or a string without NUL (PostgreSQL text cannot
    hold one) of at most ``max_bytes`` of UTF-8. M_BAD_JSON / M_INVALID_PARAM."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadJson(f"{key!r} must be a string")
    if "\x00" in value:
        raise InvalidParam(f"{key!r} must not contain NUL characters")
    if len(value.encode("utf-8")) > max_bytes:
        raise InvalidParam(f"{key!r} is longer than {max_bytes} bytes")
    return value


def optional_identifier(body: dict[str, Any], key: str) -> str | None:
    """An optional client-chosen identifier (a device ID): None, or a non-empty
    string without NUL of at most 255 bytes, like the spec's identifiers; it
    becomes part of database index keys. M_BAD_JSON / M_INVALID_PARAM."""
    value = optional_text(body, key, max_bytes=255)
    if value == "":
        raise InvalidParam(f"{key!r} must not be empty")
    return value
