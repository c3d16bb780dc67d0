"""Server key responses (server-server API "Retrieving server keys").

``build_server_keys`` makes our own ``GET /_matrix/key/v2/server`` answer:
the current verify key, the old ones with their expiry, ``valid_until_ts``
and our signature. ``parse_server_keys`` checks one received from (or
relayed for) another server: it is about the server we asked for, every key
decodes, and it is signed by every key in its ``verify_keys`` — so a notary
cannot invent keys for a server, only relay what the server signed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from signedjson.types import SigningKey

from atrium.crypto.event_signing import SignatureVerifyError, sign_json_object, verify_json_object
from atrium.crypto.keys import (
    decode_verify_key_id,
    encode_verify_key_base64,
    get_verify_key,
    key_id,
)

# How long our published keys are good for: spec asks servers not to publish
# responses expiring within the hour; a day keeps rotation reasonably fast.
OUR_KEYS_VALIDITY_MS = 24 * 3600 * 1000
# Spec, keys `valid_until_ts`: "Servers MUST use the lesser of this field and
# 7 days into the future when determining if a key is valid."
MAX_KEY_VALIDITY_MS = 7 * 24 * 3600 * 1000


class KeyResponseError(ValueError):
    """A key response we cannot use."""


@attrs.frozen
class ParsedKey:
    key_id: str
    verify_key: Any  # nacl/signedjson VerifyKey
    key_base64: str
    # For verify_keys: until when it is valid (capped); for old keys: expired_ts.
    valid_until_ts: int
    expired_ts: int | None


@attrs.frozen
class ParsedKeyResponse:
    server_name: str
    valid_until_ts: int  # as published (uncapped)
    keys: tuple[ParsedKey, ...]
    response: dict[str, Any]  # signed by the server only


def build_server_keys(
    server_name: str,
    signing_key: SigningKey,
    now_ms: int,
    old_verify_keys: Iterable[tuple[str, str, int]] = (),
    validity_ms: int = OUR_KEYS_VALIDITY_MS,
) -> dict[str, Any]:
    """Our key response; ``old_verify_keys`` are (key ID, base64 key, expired_ts)."""
    response: dict[str, Any] = {
        "server_name": server_name,
        "valid_until_ts": now_ms + validity_ms,
        "verify_keys": {
            key_id(signing_key): {"key": encode_verify_key_base64(get_verify_key(signing_key))}
        },
        "old_verify_keys": {
            kid: {"key": key, "expired_ts": expired} for kid, key, expired in old_verify_keys
        },
    }
    return sign_json_object(response, server_name, signing_key)


def parse_server_keys(data: Any, server_name: str, fetched_ts: int) -> ParsedKeyResponse:
    """Check a key response for ``server_name``; raises KeyResponseError."""
    if not isinstance(data, dict):
        raise KeyResponseError("key response is not an object")
    if data.get("server_name") != server_name:
        raise KeyResponseError(
            f"key response is for {str(data.get('server_name'))[:255]!r}, not {server_name!r}"
        )
    valid_until = data.get("valid_until_ts")
    if not isinstance(valid_until, int) or isinstance(valid_until, bool):
        raise KeyResponseError("key response has no integer valid_until_ts")
    verify_keys = data.get("verify_keys")
    old_keys = data.get("old_verify_keys", {})
    if not isinstance(verify_keys, dict) or not verify_keys:
        raise KeyResponseError("key response has no verify_keys")
    if not isinstance(old_keys, dict):
        raise KeyResponseError("old_verify_keys is not an object")
    capped = min(valid_until, fetched_ts + MAX_KEY_VALIDITY_MS)
    keys: list[ParsedKey] = []
    current: dict[str, Any] = {}
    for kid, info in verify_keys.items():
        key_b64 = info.get("key") if isinstance(info, dict) else None
        if not isinstance(key_b64, str):
            raise KeyResponseError(f"verify key {kid[:100]!r} has no 'key'")
        try:
            verify_key = decode_verify_key_id(kid, key_b64)
        except ValueError as e:
            raise KeyResponseError(str(e)) from None
        current[kid] = verify_key
        keys.append(ParsedKey(kid, verify_key, key_b64, capped, None))
    for kid, info in old_keys.items():
        if not isinstance(info, dict):
            continue
        key_b64, expired = info.get("key"), info.get("expired_ts")
        if not isinstance(key_b64, str) or not isinstance(expired, int) or kid in current:
            continue
        try:
            verify_key = decode_verify_key_id(kid, key_b64)
        except ValueError:
            continue  # an unusable old key must not spoil the current ones
        keys.append(ParsedKey(kid, verify_key, key_b64, expired, expired))
    # Only the server's own signatures are kept (a notary's are not its to relay).
    response = dict(data)
    signatures = data.get("signatures")
    own = signatures.get(server_name) if isinstance(signatures, dict) else None
    if not isinstance(own, dict):
        raise KeyResponseError(f"key response is not signed by {server_name}")
    response["signatures"] = {server_name: dict(own)}
    for kid, verify_key in current.items():
        if kid not in own:
            raise KeyResponseError(f"key response is not signed with {kid}")
        try:
            verify_json_object(response, server_name, {kid: verify_key})
        except SignatureVerifyError as e:
            raise KeyResponseError(f"bad self-signature: {e.reason}") from None
    return ParsedKeyResponse(server_name, valid_until, tuple(keys), response)


def check_notary_signature(
    response: Mapping[str, Any], notary: str, notary_keys: Mapping[str, Any]
) -> None:
    """The notary's signature on a relayed response; raises KeyResponseError."""
    try:
        verify_json_object(response, notary, notary_keys)
    except SignatureVerifyError as e:
        raise KeyResponseError(f"notary {notary}: {e.reason}") from None
