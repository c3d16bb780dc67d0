"""Signing and verifying JSON and events, pinned to the spec's own test vectors."""

from __future__ import annotations

import copy

import pytest

from atrium.crypto.event_hashing import check_content_hash
from atrium.crypto.event_signing import (
    SignatureVerifyError,
    add_hashes_and_signatures,
    compute_event_signature,
    required_signature_servers,
    sign_json_object,
    verify_event_signature,
    verify_event_signatures,
    verify_json_object,
)
from atrium.crypto.keys import generate_signing_key, get_verify_key, key_id, signing_key_from_seed
from atrium.events.redaction import prune_event_dict
from atrium.events.room_versions import (
    KNOWN_ROOM_VERSIONS,
    V1,
    V2,
    V3,
    V7,
    V8,
    V10,
    V11,
    RedactionRules,
)

# appendices "Cryptographic Test Vectors" / "Signing Key":
# SIGNING_KEY_SEED, SERVER_NAME = "domain", KEY_ID = "ed25519:1".
SPEC_KEY = signing_key_from_seed("1", "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")
SPEC_SERVER = "domain"
SPEC_VERIFY_KEYS = {"ed25519:1": get_verify_key(SPEC_KEY)}

# The spec's event vectors keep `origin`, which the redaction algorithm
# protects in room versions 1-10 (v11 dropped it from the kept keys).
# Versions with the redaction algorithm of rooms before v11 (v12 keeps v11's).
PRE_V11 = [rv for rv in KNOWN_ROOM_VERSIONS.values() if rv.redaction_rules < RedactionRules.V11]


# -- appendices "JSON Signing" ---------------------------------------------


def test_spec_vector_signing_empty_object():
    # appendices "Cryptographic Test Vectors" / "JSON Signing": empty object.
    assert sign_json_object({}, SPEC_SERVER, SPEC_KEY) == {
        "signatures": {
            "domain": {
                "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
            }
        }
    }


def test_spec_vector_signing_object_with_data():
    # appendices "Cryptographic Test Vectors" / "JSON Signing": data values.
    assert sign_json_object({"one": 1, "two": "Two"}, SPEC_SERVER, SPEC_KEY) == {
        "one": 1,
        "signatures": {
            "domain": {
                "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
            }
        },
        "two": "Two",
    }


def test_spec_vector_json_signatures_verify_and_detect_tampering():
    signed = {
        "one": 1,
        "signatures": {
            "domain": {
                "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
            }
        },
        "two": "Two",
    }
    verify_json_object(signed, SPEC_SERVER, SPEC_VERIFY_KEYS)
    # `unsigned` is outside the signature (appendices "Signing Details").
    verify_json_object({**signed, "unsigned": {"age": 5}}, SPEC_SERVER, SPEC_VERIFY_KEYS)
    with pytest.raises(SignatureVerifyError, match="invalid signature"):
        verify_json_object({**signed, "two": "Three"}, SPEC_SERVER, SPEC_VERIFY_KEYS)


# -- appendices "Event Signing" --------------------------------------------


def _spec_minimal_event():
    # appendices "Cryptographic Test Vectors" / "Event Signing": minimal event.
    return {
        "room_id": "!x:domain",
        "sender": "@a:domain",
        "origin": "domain",
        "origin_server_ts": 1000000,
        "signatures": {},
        "hashes": {},
        "type": "X",
        "content": {},
        "prev_events": [],
        "auth_events": [],
        "depth": 3,
        "unsigned": {"age_ts": 1000000},
    }


SPEC_MINIMAL_SIGNED = {
    "auth_events": [],
    "content": {},
    "depth": 3,
    "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "prev_events": [],
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        }
    },
    "type": "X",
    "unsigned": {"age_ts": 1000000},
}


def _spec_message_event():
    # appendices "Cryptographic Test Vectors" / "Event Signing": redactable content.
    return {
        "content": {"body": "Here is the message content"},
        "event_id": "$0:domain",
        "origin": "domain",
        "origin_server_ts": 1000000,
        "type": "m.room.message",
        "room_id": "!r:domain",
        "sender": "@u:domain",
        "signatures": {},
        "unsigned": {"age_ts": 1000000},
    }


SPEC_MESSAGE_SIGNED = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
        }
    },
    "unsigned": {"age_ts": 1000000},
}


@pytest.mark.parametrize("rv", PRE_V11, ids=lambda rv: f"v{rv.identifier}")
def test_spec_vector_minimal_event(rv):
    event = _spec_minimal_event()
    add_hashes_and_signatures(rv, event, SPEC_SERVER, SPEC_KEY)
    assert event == SPEC_MINIMAL_SIGNED


@pytest.mark.parametrize("rv", PRE_V11, ids=lambda rv: f"v{rv.identifier}")
def test_spec_vector_event_with_content(rv):
    event = _spec_message_event()
    add_hashes_and_signatures(rv, event, SPEC_SERVER, SPEC_KEY)
    assert event == SPEC_MESSAGE_SIGNED


def test_v11_signature_differs_because_origin_is_no_longer_protected():
    event = _spec_minimal_event()
    add_hashes_and_signatures(V11, event, SPEC_SERVER, SPEC_KEY)
    assert event["hashes"] == SPEC_MINIMAL_SIGNED["hashes"]
    assert event["signatures"] != SPEC_MINIMAL_SIGNED["signatures"]
    # ... and so changing `origin` no longer breaks it.
    verify_event_signature(V11, {**event, "origin": "elsewhere"}, SPEC_SERVER, SPEC_VERIFY_KEYS)


@pytest.mark.parametrize("signed", [SPEC_MINIMAL_SIGNED, SPEC_MESSAGE_SIGNED])
def test_spec_signed_events_verify_and_hash_checks(signed):
    verify_event_signature(V10, signed, SPEC_SERVER, SPEC_VERIFY_KEYS)
    assert check_content_hash(signed)


# -- round trips ----------------------------------------------------------

KEY = generate_signing_key("k1")
KEYS = {key_id(KEY): get_verify_key(KEY)}


def _signed(rv, **overrides):
    event = {
        "type": "m.room.message",
        "room_id": "!room:hs.example",
        "sender": "@alice:hs.example",
        "content": {"body": "hello", "msgtype": "m.text"},
        "depth": 7,
        "origin_server_ts": 1_700_000_000_000,
        "prev_events": ["$prev"],
        "auth_events": ["$auth1", "$auth2"],
    }
    if rv.is_v1_event_ids:
        event["event_id"] = "$abc:hs.example"
        event["prev_events"] = [["$prev:hs.example", {}]]
        event["auth_events"] = [["$auth:hs.example", {}]]
    event.update(overrides)
    add_hashes_and_signatures(rv, event, "hs.example", KEY)
    return event


ALL = list(KNOWN_ROOM_VERSIONS.values())


@pytest.mark.parametrize("rv", ALL, ids=lambda rv: f"v{rv.identifier}")
def test_signed_event_verifies_and_survives_redaction(rv):
    event = _signed(rv)
    verify_event_signature(rv, event, "hs.example", KEYS)
    redacted = prune_event_dict(rv, event)
    assert "body" not in redacted["content"]
    verify_event_signature(rv, redacted, "hs.example", KEYS)
    # The content hash, unlike the signature, notices the redaction.
    assert check_content_hash(event)
    assert not check_content_hash(redacted)


@pytest.mark.parametrize("rv", ALL, ids=lambda rv: f"v{rv.identifier}")
def test_tampering_any_signed_field_breaks_the_signature(rv):
    event = _signed(rv)
    signed_keys = set(prune_event_dict(rv, event)) - {"signatures", "unsigned", "content"}
    assert {"type", "room_id", "sender", "depth", "hashes", "prev_events"} <= signed_keys
    for field in sorted(signed_keys):
        tampered = copy.deepcopy(event)
        tampered[field] = {"sha256": "AAAA"} if field == "hashes" else "changed"
        with pytest.raises(SignatureVerifyError):
            verify_event_signature(rv, tampered, "hs.example", KEYS)


def test_tampering_protected_content_breaks_signature_but_body_only_the_hash():
    event = _signed(
        V10,
        type="m.room.member",
        state_key="@alice:hs.example",
        content={"membership": "join", "displayname": "A"},
    )
    changed_membership = copy.deepcopy(event)
    changed_membership["content"]["membership"] = "leave"
    with pytest.raises(SignatureVerifyError):
        verify_event_signature(V10, changed_membership, "hs.example", KEYS)

    changed_name = copy.deepcopy(event)
    changed_name["content"]["displayname"] = "B"
    verify_event_signature(V10, changed_name, "hs.example", KEYS)
    assert not check_content_hash(changed_name)


def test_unsigned_and_extra_signatures_do_not_affect_verification():
    event = _signed(V10)
    event["unsigned"] = {"age": 12}
    event["signatures"]["other.example"] = {"ed25519:x": "garbage"}
    verify_event_signature(V10, event, "hs.example", KEYS)


def test_verification_fails_with_wrong_key_missing_server_or_unknown_key_only():
    event = _signed(V10)
    other = generate_signing_key("k1")
    with pytest.raises(SignatureVerifyError, match="invalid signature"):
        verify_event_signature(V10, event, "hs.example", {"ed25519:k1": get_verify_key(other)})
    with pytest.raises(SignatureVerifyError, match="no signature from elsewhere"):
        verify_event_signature(V10, event, "elsewhere", KEYS)
    with pytest.raises(SignatureVerifyError, match="known key"):
        verify_event_signature(V10, event, "hs.example", {"ed25519:k2": get_verify_key(other)})


def test_unknown_keys_are_skipped_but_every_known_key_must_verify():
    event = _signed(V10)
    event["signatures"]["hs.example"]["ed25519:gone"] = "AAAA"
    event["signatures"]["hs.example"]["curve25519:x"] = "AAAA"
    verify_event_signature(V10, event, "hs.example", KEYS)

    # A second known key whose signature is bad makes the check fail.
    second = generate_signing_key("k2")
    keys = {**KEYS, "ed25519:k2": get_verify_key(second)}
    event["signatures"]["hs.example"]["ed25519:k2"] = event["signatures"]["hs.example"][
        "ed25519:k1"
    ]
    with pytest.raises(SignatureVerifyError, match="ed25519:k2"):
        verify_event_signature(V10, event, "hs.example", keys)


def test_signature_that_is_not_base64_is_reported():
    event = _signed(V10)
    event["signatures"]["hs.example"]["ed25519:k1"] = "!!!"
    with pytest.raises(SignatureVerifyError):
        verify_event_signature(V10, event, "hs.example", KEYS)


def test_compute_event_signature_returns_only_the_new_signer():
    event = _signed(V10)
    other = generate_signing_key("o")
    sigs = compute_event_signature(V10, event, "other.example", other)
    assert list(sigs) == ["other.example"] and list(sigs["other.example"]) == ["ed25519:o"]
    event["signatures"].update(sigs)
    verify_event_signature(V10, event, "other.example", {"ed25519:o": get_verify_key(other)})
    verify_event_signature(V10, event, "hs.example", KEYS)


def test_resigning_keeps_other_servers_signatures():
    event = _signed(V10)
    event["signatures"]["other.example"] = {"ed25519:z": "sig"}
    add_hashes_and_signatures(V10, event, "hs.example", KEY)
    assert event["signatures"]["other.example"] == {"ed25519:z": "sig"}


def test_content_hash_is_base64_sha256_and_detects_content_changes():
    event = _signed(V10)
    assert len(event["hashes"]["sha256"]) == 43
    event["content"]["body"] = "goodbye"
    assert not check_content_hash(event)


# -- which servers must sign --------------------------------------------------


def test_sender_server_must_sign_and_v1_v2_also_need_the_event_id_domain():
    event = {
        "type": "m.room.message",
        "sender": "@a:one.example",
        "event_id": "$x:two.example",
        "content": {},
    }
    assert required_signature_servers(V1, event) == {"one.example", "two.example"}
    assert required_signature_servers(V2, event) == {"one.example", "two.example"}
    assert required_signature_servers(V3, event) == {"one.example"}
    with pytest.raises(SignatureVerifyError):
        required_signature_servers(V1, {**event, "event_id": None})


def test_restricted_join_needs_the_authorising_server_from_v8():
    event = {
        "type": "m.room.member",
        "sender": "@a:one.example",
        "state_key": "@a:one.example",
        "content": {"membership": "join", "join_authorised_via_users_server": "@b:three.example"},
    }
    assert required_signature_servers(V7, event) == {"one.example"}
    assert required_signature_servers(V8, event) == {"one.example", "three.example"}
    assert required_signature_servers(V11, event) == {"one.example", "three.example"}


def test_third_party_invite_does_not_need_the_sender_server():
    event = {
        "type": "m.room.member",
        "sender": "@a:one.example",
        "state_key": "@c:four.example",
        "content": {"membership": "invite", "third_party_invite": {"signed": {}}},
    }
    assert required_signature_servers(V10, event) == set()
    plain_invite = {**event, "content": {"membership": "invite"}}
    assert required_signature_servers(V10, plain_invite) == {"one.example"}


def test_verify_event_signatures_requires_every_required_server():
    event = _signed(
        V8,
        type="m.room.member",
        state_key="@alice:hs.example",
        content={"membership": "join", "join_authorised_via_users_server": "@bob:auth.example"},
    )
    with pytest.raises(SignatureVerifyError, match="auth.example"):
        verify_event_signatures(V8, event, {"hs.example": KEYS})
    auth_key = generate_signing_key("a")
    event["signatures"].update(compute_event_signature(V8, event, "auth.example", auth_key))
    verify_event_signatures(
        V8, event, {"hs.example": KEYS, "auth.example": {"ed25519:a": get_verify_key(auth_key)}}
    )


def test_sender_without_server_name_is_a_verify_error():
    with pytest.raises(SignatureVerifyError):
        required_signature_servers(V10, {"type": "m", "sender": "@nodomain", "content": {}})
