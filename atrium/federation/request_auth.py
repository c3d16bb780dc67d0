"""X-Matrix request authentication (server-server API "Request Authentication").

Every federation request is signed by its origin: the JSON object
``{method, uri, origin, destination[, content]}`` is signed with the origin's
key (appendices "Signing JSON") and the signature travels in an
``Authorization: X-Matrix origin=...,destination=...,key=...,sig=...``
header. ``uri`` is the request target from ``/_matrix/...`` with its query
string, exactly as sent; ``content`` is the parsed JSON body, present only
when there is one.

The receiving side (``RequestAuthenticator``) rebuilds the same object from
what it received, checks the destination is this server, fetches the
origin's key (it must be a current ``verify_keys`` entry: old keys are only
good for events) and verifies the signature. Any failure is a 401
``M_UNAUTHORIZED``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from signedjson.types import SigningKey

from atrium.crypto.event_signing import SignatureVerifyError, sign_json_object, verify_json_object
from atrium.errors import Unauthorized
from atrium.events.validation import is_valid_server_name

logger = logging.getLogger(__name__)

SCHEME = "X-Matrix"


@attrs.frozen
class XMatrixAuth:
    """The parameters of one X-Matrix Authorization header."""

    origin: str
    destination: str | None
    key: str
    sig: str


def signed_request_json(
    method: str, uri: str, origin: str, destination: str, content: Any = None
) -> dict[str, Any]:
    """The object whose signature authenticates a request (without signatures)."""
    obj: dict[str, Any] = {
        "method": method,
        "uri": uri,
        "origin": origin,
        "destination": destination,
    }
    if content is not None:
        obj["content"] = content
    return obj


def authorization_headers(
    origin: str,
    destination: str,
    method: str,
    uri: str,
    content: Any,
    signing_key: SigningKey,
) -> list[bytes]:
    """The Authorization header value(s) for an outbound request.

    Written the way the spec asks senders to for compatibility: one space
    after the scheme, lower-case names, no whitespace around commas.
    """
    signed = sign_json_object(
        signed_request_json(method, uri, origin, destination, content), origin, signing_key
    )
    return [
        (
            f'{SCHEME} origin="{origin}",destination="{destination}",key="{key_id}",sig="{sig}"'
        ).encode()
        for key_id, sig in signed["signatures"][origin].items()
    ]


def parse_authorization_header(value: str) -> XMatrixAuth:
    """Parse ``X-Matrix <params>`` (RFC 9110 section 11.4 auth-params).

    Names are case-insensitive; values are tokens or quoted strings with
    backslash escapes; unquoted values may contain colons (spec: older
    servers send them). Unknown parameters are ignored. ValueError when the
    header is not X-Matrix or lacks origin, key or sig.
    """
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != SCHEME.lower():
        raise ValueError("not an X-Matrix authorization")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t,":
            i += 1
        if i >= n:
            break
        eq = rest.find("=", i)
        if eq == -1:
            raise ValueError("parameter without a value")
        name = rest[i:eq].strip().lower()
        i = eq + 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            chars: list[str] = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(rest[i])
                i += 1
            if i >= n:
                raise ValueError("unterminated quoted value")
            i += 1
            param_value = "".join(chars)
        else:
            end = rest.find(",", i)
            end = n if end == -1 else end
            param_value = rest[i:end].strip()
            i = end
        if not name:
            raise ValueError("empty parameter name")
        params.setdefault(name, param_value)
    try:
        return XMatrixAuth(
            params["origin"], params.get("destination"), params["key"], params["sig"]
        )
    except KeyError as e:
        raise ValueError(f"missing X-Matrix parameter {e.args[0]!r}") from None


# async (server_name, key_id) -> a verify key valid now; raises KeyLookupError.
RequestKeyLookup = Callable[[str, str], Awaitable[Any]]


class RequestAuthenticator:
    """Checks the X-Matrix signature of inbound federation requests."""

    def __init__(self, server_name: str, get_request_key: RequestKeyLookup) -> None:
        self.server_name = server_name
        self.get_request_key = get_request_key

    async def authenticate(self, method: str, uri: str, headers: list[bytes], content: Any) -> str:
        """The origin server of a validly signed request; raises Unauthorized.

        ``headers`` are the raw Authorization header values; the first
        X-Matrix one is checked.
        """
        auth = None
        for raw in headers:
            try:
                auth = parse_authorization_header(raw.decode("utf-8"))
                break
            except (ValueError, UnicodeDecodeError):
                continue
        if auth is None:
            raise Unauthorized("Missing or malformed X-Matrix Authorization header")
        if not is_valid_server_name(auth.origin):
            raise Unauthorized("Invalid origin server name")
        # Older senders omit destination; they signed with our name all the same.
        if auth.destination is not None and auth.destination != self.server_name:
            raise Unauthorized(
                f"Request was for {auth.destination[:255]!r}, this server is {self.server_name!r}"
            )
        try:
            verify_key = await self.get_request_key(auth.origin, auth.key)
        except Exception as e:
            logger.info("No usable key %s of %s: %s", auth.key, auth.origin, e)
            raise Unauthorized(f"No valid key {auth.key[:100]!r} known for {auth.origin}") from None
        signed = signed_request_json(method, uri, auth.origin, self.server_name, content)
        signed["signatures"] = {auth.origin: {auth.key: auth.sig}}
        try:
            verify_json_object(signed, auth.origin, {auth.key: verify_key})
        except SignatureVerifyError as e:
            raise Unauthorized(f"Invalid request signature: {e.reason}") from None
        return auth.origin
