"""Signing and verifying events and arbitrary JSON objects.

Spec sections implemented here:
- appendices "Signing Details" / "Checking for a Signature": signing any JSON
  object (also used for the X-Matrix federation request authentication);
- server-server API "Adding hashes and signatures to outgoing events": the
  content hash goes into ``hashes.sha256``, then the *redacted* event is
  signed and the signature copied back into the full event;
- server-server API "Validating hashes and signatures on received events":
  the redacted event is checked for signatures from the servers that must
  have signed it (see ``required_signature_servers``).

Hashing itself lives in ``atrium.crypto.event_hashing``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import nacl.exceptions
import nacl.signing
from canonicaljson import encode_canonical_json
from signedjson.sign import sign_json
from signedjson.types import SigningKey
from unpaddedbase64 import decode_base64, encode_base64

from atrium.crypto.event_hashing import compute_content_hash
from atrium.crypto.keys import ED25519, key_id
from atrium.events.redaction import prune_event_dict
from atrium.events.room_versions import EventFormatVersion, RoomVersion

# A server's verify keys by key ID ("ed25519:abc"). Keys may be signedjson
# VerifyKeys or plain nacl ones: only `.verify()` is used.
VerifyKeys = Mapping[str, nacl.signing.VerifyKey]


class SignatureVerifyError(Exception):
    """A signature check failed; ``reason`` says why, in words fit for a log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- arbitrary JSON ------------------------------------------------------


def sign_json_object(
    obj: dict[str, Any], server_name: str, signing_key: SigningKey
) -> dict[str, Any]:
    """Add ``server_name``'s signature to ``obj`` (in place) and return it.

    The signature covers the canonical JSON of ``obj`` without `signatures`
    and `unsigned` (appendices "Signing Details"); signatures already present
    from other servers or keys are kept.
    """
    return sign_json(obj, server_name, signing_key)


def verify_json_object(obj: Mapping[str, Any], server_name: str, verify_keys: VerifyKeys) -> None:
    """Check ``obj`` carries a valid signature by ``server_name``.

    Follows appendices "Checking for a Signature": signatures under key IDs
    with an algorithm we do not understand, or whose key is not in
    ``verify_keys``, are skipped (the server-server API says unknown keys are
    ignored); at least one signature must remain, and every remaining one must
    verify. Raises SignatureVerifyError otherwise.
    """
    signatures = obj.get("signatures")
    if not isinstance(signatures, Mapping):
        raise SignatureVerifyError("object has no signatures")
    server_sigs = signatures.get(server_name)
    if not isinstance(server_sigs, Mapping) or not server_sigs:
        raise SignatureVerifyError(f"no signature from {server_name}")

    candidates = [
        (kid, sig)
        for kid, sig in server_sigs.items()
        if isinstance(kid, str) and kid.startswith(ED25519 + ":") and kid in verify_keys
    ]
    if not candidates:
        raise SignatureVerifyError(
            f"no signature from {server_name} with a known key "
            f"(signed with {sorted(map(str, server_sigs))}, known {sorted(verify_keys)})"
        )

    unsigned_view = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    try:
        message = encode_canonical_json(unsigned_view)
    except (TypeError, ValueError) as e:
        raise SignatureVerifyError(f"object cannot be encoded as canonical JSON: {e}") from e

    for kid, sig in candidates:
        if not isinstance(sig, str):
            raise SignatureVerifyError(f"signature {server_name} {kid} is not a string")
        try:
            sig_bytes = decode_base64(sig)
        except Exception as e:
            raise SignatureVerifyError(f"signature {server_name} {kid} is not valid base64") from e
        try:
            verify_keys[kid].verify(message, sig_bytes)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError) as e:
            raise SignatureVerifyError(f"invalid signature {server_name} {kid}") from e


# -- events ----------------------------------------------------------------


def _redacted_for_signing(
    room_version: RoomVersion, event_dict: Mapping[str, Any]
) -> dict[str, Any]:
    """The redacted event that a signature covers (unsigned removed)."""
    redacted = prune_event_dict(room_version, dict(event_dict))
    # prune_event_dict keeps a few unsigned fields for serving clients; they
    # are never part of what is signed.
    redacted.pop("unsigned", None)
    return redacted


def compute_event_signature(
    room_version: RoomVersion,
    event_dict: Mapping[str, Any],
    signature_name: str,
    signing_key: SigningKey,
) -> dict[str, dict[str, str]]:
    """Sign the redacted event; returns only the new ``{signature_name: {key_id: sig}}``.

    The event must already carry its `hashes`. Existing signatures are not
    included in the result: merge it into the event's `signatures` yourself
    (this is what countersigning, e.g. of an invite, needs).
    """
    redacted = _redacted_for_signing(room_version, event_dict)
    redacted.pop("signatures", None)
    message = encode_canonical_json(redacted)
    signature = encode_base64(signing_key.sign(message).signature)
    return {signature_name: {key_id(signing_key): signature}}


def add_hashes_and_signatures(
    room_version: RoomVersion,
    event_dict: dict[str, Any],
    signature_name: str,
    signing_key: SigningKey,
) -> None:
    """Set ``hashes.sha256`` to the content hash, then sign (in place).

    server-server API "Adding hashes and signatures to outgoing events".
    Other hash algorithms already in `hashes` are kept, as are signatures by
    other servers or keys.
    """
    hashes = event_dict.get("hashes")
    hashes = dict(hashes) if isinstance(hashes, dict) else {}
    hashes["sha256"] = encode_base64(compute_content_hash(event_dict))
    event_dict["hashes"] = hashes

    new_sigs = compute_event_signature(room_version, event_dict, signature_name, signing_key)
    signatures = event_dict.get("signatures")
    signatures = copy.deepcopy(signatures) if isinstance(signatures, dict) else {}
    for server, by_key in new_sigs.items():
        existing = signatures.get(server)
        merged = dict(existing) if isinstance(existing, dict) else {}
        merged.update(by_key)
        signatures[server] = merged
    event_dict["signatures"] = signatures


def verify_event_signature(
    room_version: RoomVersion,
    event_dict: Mapping[str, Any],
    server_name: str,
    verify_keys: VerifyKeys,
) -> None:
    """Check ``server_name`` validly signed the event (full or already redacted).

    The signature covers the redacted event, so this succeeds for a redacted
    copy too. Raises SignatureVerifyError.
    """
    redacted = _redacted_for_signing(room_version, event_dict)
    try:
        verify_json_object(redacted, server_name, verify_keys)
    except SignatureVerifyError as e:
        raise SignatureVerifyError(f"event signature check failed: {e.reason}") from e


def domain_of(identifier: str) -> str:
    """The server name part of ``@user:domain``, ``!room:domain``, ``$event:domain``."""
    _, sep, domain = identifier.partition(":")
    if not sep or not domain:
        raise SignatureVerifyError(f"identifier {identifier!r} has no server name")
    return domain


def _is_third_party_invite(event_dict: Mapping[str, Any]) -> bool:
    content = event_dict.get("content")
    return (
        event_dict.get("type") == "m.room.member"
        and isinstance(content, Mapping)
        and content.get("membership") == "invite"
        and "third_party_invite" in content
    )


def required_signature_servers(
    room_version: RoomVersion, event_dict: Mapping[str, Any]
) -> set[str]:
    """The servers whose signatures an event must carry to be accepted.

    - The sender's server (rooms/vN "Authorisation rules": events must be
      signed by the server denoted by `sender`), except for invites made from
      a third-party invite: the server-server API notes that the server
      actually sending those may differ from the sender's, whose link to the
      invite is instead proven by the identity server's signature on
      ``content.third_party_invite.signed`` (checked by the auth rules).
    - v1/v2 format (rooms 1 and 2): also the server named in the `event_id`
      (rooms/v3 "Authorisation rules" describes this as dropped from v3 on).
    - Rooms with restricted joins (v8+): the server of the user named in
      ``content.join_authorised_via_users_server`` of a membership event
      (rooms/v8 auth rule 4.2).

    Raises SignatureVerifyError when an identifier needed here is malformed.
    """
    servers: set[str] = set()
    sender = event_dict.get("sender")
    if not _is_third_party_invite(event_dict):
        if not isinstance(sender, str):
            raise SignatureVerifyError("event has no sender")
        servers.add(domain_of(sender))

    if room_version.event_format == EventFormatVersion.V1:
        event_id = event_dict.get("event_id")
        if not isinstance(event_id, str):
            raise SignatureVerifyError("v1 format event has no event_id")
        servers.add(domain_of(event_id))

    content = event_dict.get("content")
    if (
        room_version.restricted_join_rule
        and event_dict.get("type") == "m.room.member"
        and isinstance(content, Mapping)
        and "join_authorised_via_users_server" in content
    ):
        authoriser = content["join_authorised_via_users_server"]
        if not isinstance(authoriser, str):
            raise SignatureVerifyError("join_authorised_via_users_server is not a user ID")
        servers.add(domain_of(authoriser))
    return servers


def verify_event_signatures(
    room_version: RoomVersion,
    event_dict: Mapping[str, Any],
    keys_by_server: Mapping[str, VerifyKeys],
) -> None:
    """Check every server from ``required_signature_servers`` validly signed the event.

    ``keys_by_server`` holds the known, unexpired keys of each server (for
    rooms v5+, valid at the event's `origin_server_ts`: the caller selects
    them). A required server without keys fails the check.
    """
    for server in sorted(required_signature_servers(room_version, event_dict)):
        verify_event_signature(room_version, event_dict, server, keys_by_server.get(server, {}))
