"""Building events for every room version: IDs, prev/auth wire forms,
`redacts` placement, hashes and signatures."""

from __future__ import annotations

import pytest
from unpaddedbase64 import decode_base64

from atrium.crypto.event_hashing import check_content_hash, compute_event_id
from atrium.crypto.event_signing import SignatureVerifyError, verify_event_signatures
from atrium.crypto.keys import generate_signing_key, get_verify_key, key_id
from atrium.events.builder import MAX_DEPTH_STRICT, MAX_DEPTH_V1, build_event
from atrium.events.event import Event
from atrium.events.room_versions import KNOWN_ROOM_VERSIONS, V1, V2, V3, V5, V6, V10, V11
from atrium.events.validation import validate_event

KEY = generate_signing_key("b1")
KEYS = {"hs.example": {key_id(KEY): get_verify_key(KEY)}}
ALL = list(KNOWN_ROOM_VERSIONS.values())


def _room_id(rv) -> str:
    # rooms/v12 room IDs are a create event's ID with `!` (no server name).
    return "!" + "c" * 43 if rv.room_id_is_create_event_id else "!room:hs.example"


def _build(rv, **overrides) -> Event:
    args = dict(
        room_version=rv,
        type="m.room.message",
        sender="@alice:hs.example",
        room_id=_room_id(rv),
        content={"body": "hi", "msgtype": "m.text"},
        prev_event_ids=["$prev1:hs.example", "$prev2:hs.example"],
        auth_event_ids=["$create:hs.example", "$pl:hs.example", "$member:hs.example"],
        depth=12,
        origin_server_ts=1_700_000_000_123,
        server_name="hs.example",
        signing_key=KEY,
    )
    args.update(overrides)
    return build_event(**args)


@pytest.mark.parametrize("rv", ALL, ids=lambda rv: f"v{rv.identifier}")
def test_built_event_reads_back_and_verifies(rv):
    event = _build(rv)
    assert event.room_version is rv
    assert event.prev_event_ids() == ["$prev1:hs.example", "$prev2:hs.example"]
    listed = ["$create:hs.example", "$pl:hs.example", "$member:hs.example"]
    assert event.listed_auth_event_ids() == listed
    # v12: the create event named by the room ID is an implicit auth event.
    implicit = ["$" + "c" * 43] if rv.room_id_is_create_event_id else []
    assert event.auth_event_ids() == implicit + listed
    assert (event.type, event.sender, event.room_id, event.depth) == (
        "m.room.message",
        "@alice:hs.example",
        _room_id(rv),
        12,
    )
    assert event.origin_server_ts == 1_700_000_000_123
    assert event.content == {"body": "hi", "msgtype": "m.text"}
    assert not event.is_state()

    pdu = event.get_pdu_json()
    assert check_content_hash(pdu)
    verify_event_signatures(rv, pdu, KEYS)
    validate_event(rv, pdu)


@pytest.mark.parametrize("rv", ALL, ids=lambda rv: f"v{rv.identifier}")
def test_built_event_id_matches_its_format(rv):
    event = _build(rv)
    pdu = event.get_pdu_json()
    if rv.is_v1_event_ids:
        assert pdu["event_id"] == event.event_id
        opaque, _, domain = event.event_id[1:].partition(":")
        assert domain == "hs.example" and len(opaque) >= 16
    else:
        assert "event_id" not in pdu
        assert event.event_id == compute_event_id(rv, pdu)
        alphabet_chars = set(event.event_id[1:])
        if rv.identifier == "3":
            assert not alphabet_chars & {"-", "_"}
        else:
            assert not alphabet_chars & {"+", "/"}
        assert len(decode_base64(event.event_id[1:])) == 32


@pytest.mark.parametrize("rv", ALL, ids=lambda rv: f"v{rv.identifier}")
def test_prev_and_auth_events_wire_form(rv):
    pdu = _build(rv).get_pdu_json()
    if rv.is_v1_event_ids:
        assert pdu["prev_events"] == [["$prev1:hs.example", {}], ["$prev2:hs.example", {}]]
        assert all(isinstance(r, list) and r[1] == {} for r in pdu["auth_events"])
    else:
        assert pdu["prev_events"] == ["$prev1:hs.example", "$prev2:hs.example"]
        assert pdu["auth_events"] == ["$create:hs.example", "$pl:hs.example", "$member:hs.example"]


@pytest.mark.parametrize("rv", [V1, V2])
def test_v1_format_pairs_carry_known_reference_hashes(rv):
    raw = bytes(range(32))
    pdu = _build(
        rv, reference_hashes={"$prev1:hs.example": raw, "$pl:hs.example": "c29tZWhhc2g"}
    ).get_pdu_json()
    assert pdu["prev_events"][0] == [
        "$prev1:hs.example",
        {"sha256": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"},
    ]
    assert pdu["prev_events"][1] == ["$prev2:hs.example", {}]
    assert pdu["auth_events"][1] == ["$pl:hs.example", {"sha256": "c29tZWhhc2g"}]


def test_v1_event_id_generator_is_used_and_ignored_for_hash_ids():
    made = _build(V1, event_id_generator=lambda: "$fixed:hs.example")
    assert made.event_id == "$fixed:hs.example"
    verify_event_signatures(V1, made.get_pdu_json(), KEYS)
    assert (
        _build(V3, event_id_generator=lambda: "$fixed:hs.example").event_id != "$fixed:hs.example"
    )


def test_v1_random_event_ids_differ():
    assert _build(V1).event_id != _build(V1).event_id


@pytest.mark.parametrize("rv", ALL, ids=lambda rv: f"v{rv.identifier}")
def test_redacts_is_top_level_before_v11_and_in_content_from_v11(rv):
    event = _build(
        rv, type="m.room.redaction", content={"reason": "spam"}, redacts="$bad:hs.example"
    )
    pdu = event.get_pdu_json()
    assert event.redacts == "$bad:hs.example"
    if rv.redacts_in_content:
        assert "redacts" not in pdu and pdu["content"] == {
            "reason": "spam",
            "redacts": "$bad:hs.example",
        }
    else:
        assert pdu["redacts"] == "$bad:hs.example" and pdu["content"] == {"reason": "spam"}
    verify_event_signatures(rv, pdu, KEYS)


def test_v11_protects_redacts_in_content_under_the_signature():
    pdu = _build(V11, type="m.room.redaction", content={}, redacts="$bad:hs.example").get_pdu_json()
    pdu["content"]["redacts"] = "$other:hs.example"
    with pytest.raises(SignatureVerifyError):
        verify_event_signatures(V11, pdu, KEYS)


def test_redacts_on_a_non_redaction_event_is_refused():
    with pytest.raises(ValueError):
        _build(V10, redacts="$x:hs.example")


def test_state_key_and_unsigned_are_carried():
    event = _build(
        V10,
        type="m.room.member",
        state_key="@alice:hs.example",
        content={"membership": "join"},
        unsigned={"replaces_state": "$old"},
    )
    assert event.is_state() and event.state_key_tuple() == ("m.room.member", "@alice:hs.example")
    assert event.unsigned == {"replaces_state": "$old"}
    assert check_content_hash(event.get_pdu_json())


def test_empty_state_key_makes_a_state_event():
    assert _build(V10, type="m.room.topic", state_key="", content={"topic": "t"}).is_state()


def test_inputs_are_not_modified():
    content = {"nested": {"a": 1}}
    prev = ["$p:hs.example"]
    event = _build(V11, type="m.room.redaction", content=content, redacts="$x", prev_event_ids=prev)
    assert content == {"nested": {"a": 1}} and prev == ["$p:hs.example"]
    assert event.content["nested"] is not content["nested"]


@pytest.mark.parametrize(
    ("rv", "limit"),
    [(V1, MAX_DEPTH_V1), (V5, MAX_DEPTH_V1), (V6, MAX_DEPTH_STRICT), (V11, MAX_DEPTH_STRICT)],
)
def test_depth_is_clamped_to_the_room_version_limit(rv, limit):
    assert _build(rv, depth=limit + 10).depth == limit
    assert _build(rv, depth=limit).depth == limit
    assert _build(rv, depth=limit - 1).depth == limit - 1
