"""Content hashes, reference hashes and event IDs, checked against an
independent encoding written from the spec's own description."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from atrium.crypto.event_hashing import (
    check_content_hash,
    compute_content_hash,
    compute_event_id,
    compute_reference_hash,
)
from atrium.events.redaction import prune_event_dict
from atrium.events.room_versions import KNOWN_ROOM_VERSIONS, V1, V3, V4, EventFormatVersion


def _canonical(value) -> bytes:
    # The reference implementation given in appendices "Canonical JSON".
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def _event(n: int) -> dict:
    return {
        "type": "m.room.message",
        "room_id": "!r:hs.example",
        "sender": "@a:hs.example",
        "content": {"body": f"message {n}"},
        "depth": 5,
        "origin_server_ts": 1000,
        "prev_events": ["$p"],
        "auth_events": ["$a"],
        # Part of the redacted event, so `n` changes the reference hash.
        "hashes": {"sha256": f"placeholder{n}"},
        "signatures": {"hs.example": {"ed25519:1": "sig"}},
        "unsigned": {"age": 3},
    }


def _event_with_both_special_chars() -> dict:
    """An event whose reference hash in standard base64 holds both '+' and '/'."""
    for n in range(1000):
        event = _event(n)
        b64 = base64.b64encode(compute_reference_hash(V3, event)).decode()
        if "+" in b64 and "/" in b64:
            return event
    raise AssertionError("no suitable event found")


def test_reference_hash_is_sha256_of_redacted_event_without_signatures_and_unsigned():
    event = _event(1)
    redacted = prune_event_dict(V3, event)
    redacted.pop("signatures")
    redacted.pop("unsigned", None)
    assert compute_reference_hash(V3, event) == hashlib.sha256(_canonical(redacted)).digest()


def test_v3_event_id_uses_standard_base64_and_v4_url_safe():
    event = _event_with_both_special_chars()
    digest = hashlib.sha256(
        _canonical(
            {
                k: v
                for k, v in prune_event_dict(V3, event).items()
                if k not in ("signatures", "unsigned")
            }
        )
    ).digest()
    standard = base64.b64encode(digest).decode().rstrip("=")
    urlsafe = base64.urlsafe_b64encode(digest).decode().rstrip("=")

    v3_id = compute_event_id(V3, event)
    v4_id = compute_event_id(V4, event)
    assert v3_id == "$" + standard and ("+" in v3_id and "/" in v3_id)
    assert v4_id == "$" + urlsafe and not ("+" in v4_id or "/" in v4_id)
    assert len(v3_id) == 44


def test_event_id_ignores_signatures_unsigned_and_redactable_content_changes_only_via_hash():
    event = _event(2)
    base_id = compute_event_id(V4, event)
    assert compute_event_id(V4, {**event, "unsigned": {"age": 99}}) == base_id
    assert compute_event_id(V4, {**event, "signatures": {}}) == base_id
    # The body is redacted away, so it only reaches the ID through `hashes`.
    assert compute_event_id(V4, {**event, "content": {"body": "other"}}) == base_id
    assert compute_event_id(V4, {**event, "hashes": {"sha256": "other"}}) != base_id


def test_stored_format_overrides_room_version_for_event_ids():
    event = _event_with_both_special_chars()
    assert compute_event_id(V4, event, EventFormatVersion.V2) == compute_event_id(V3, event)


def test_v1_format_has_no_computed_event_id():
    with pytest.raises(ValueError):
        compute_event_id(V1, _event(3))


def test_content_hash_excludes_unsigned_signatures_and_hashes_only():
    event = _event(4)
    expected = hashlib.sha256(
        _canonical(
            {k: v for k, v in event.items() if k not in ("unsigned", "signatures", "hashes")}
        )
    ).digest()
    assert compute_content_hash(event) == expected
    assert (
        compute_content_hash({**event, "unsigned": {}, "signatures": {}, "hashes": {}}) == expected
    )
    assert compute_content_hash({**event, "depth": 6}) != expected


@pytest.mark.parametrize(
    "hashes", [None, {}, {"sha256": 5}, {"sha256": "!!not base64"}, {"sha256": "AAAA"}]
)
def test_check_content_hash_fails_on_missing_or_malformed_hash(hashes):
    event = _event(5)
    if hashes is None:
        event.pop("hashes")
    else:
        event["hashes"] = hashes
    assert not check_content_hash(event)


HASH_ID_VERSIONS = [rv for rv in KNOWN_ROOM_VERSIONS.values() if not rv.is_v1_event_ids]


@pytest.mark.parametrize("rv", HASH_ID_VERSIONS, ids=lambda rv: f"v{rv.identifier}")
def test_event_ids_for_v3_plus_start_with_dollar_and_are_43_chars_of_hash(rv):
    event_id = compute_event_id(rv, _event(6))
    assert event_id.startswith("$") and len(event_id) == 44
