"""Structural PDU validation (schema, size limits, identifier grammar, strict
canonical JSON) and strict parsing of JSON request bodies."""

from __future__ import annotations

import copy

import pytest
from canonicaljson import encode_canonical_json

from atrium.events.room_versions import KNOWN_ROOM_VERSIONS, V1, V3, V5, V10, V11
from atrium.events.validation import (
    MAX_PDU_SIZE,
    EventValidationError,
    StrictJSONError,
    is_valid_room_id,
    is_valid_server_name,
    is_valid_user_id,
    parse_strict_json,
    validate_event,
)

# rooms/v12: "!" + a create event's reference hash (unpadded URL-safe base64).
V12_ROOM_ID = "!" + "A" * 42 + "_"


def _pdu(rv=V10, **overrides):
    event = {
        "type": "m.room.message",
        "room_id": "!room:hs.example",
        "sender": "@alice:hs.example",
        "content": {"body": "hi"},
        "depth": 3,
        "origin_server_ts": 1_700_000_000_000,
        "prev_events": ["$p"],
        "auth_events": ["$a1", "$a2"],
        "hashes": {"sha256": "abc"},
        "signatures": {"hs.example": {"ed25519:1": "sig"}},
    }
    if rv.room_id_is_create_event_id:
        event["room_id"] = V12_ROOM_ID
    if rv.is_v1_event_ids:
        event["event_id"] = "$e:hs.example"
        event["prev_events"] = [["$p:hs.example", {"sha256": "x"}]]
        event["auth_events"] = [["$a:hs.example", {}]]
    event.update(overrides)
    return event


def _fails(rv, event, errcode, match=None):
    with pytest.raises(EventValidationError, match=match) as info:
        validate_event(rv, event)
    assert info.value.errcode == errcode
    return info.value


ALL = list(KNOWN_ROOM_VERSIONS.values())


@pytest.mark.parametrize("rv", ALL, ids=lambda rv: f"v{rv.identifier}")
def test_well_formed_event_passes_in_every_version(rv):
    validate_event(rv, _pdu(rv))
    validate_event(rv, _pdu(rv, state_key="", unsigned={"age": 1}))


# -- total size --------------------------------------------------------------


def _event_of_size(size: int) -> dict:
    event = _pdu(content={"body": ""})
    overhead = len(encode_canonical_json(event))
    event["content"]["body"] = "x" * (size - overhead)
    assert len(encode_canonical_json(event)) == size
    return event


def test_event_of_exactly_65536_bytes_is_accepted():
    validate_event(V10, _event_of_size(MAX_PDU_SIZE))


def test_event_of_65537_bytes_is_too_large():
    _fails(V10, _event_of_size(MAX_PDU_SIZE + 1), "M_TOO_LARGE", "65537")


def test_size_counts_signatures_and_utf8_bytes():
    event = _event_of_size(MAX_PDU_SIZE)
    event["signatures"]["other.example"] = {"ed25519:1": "s"}
    _fails(V10, event, "M_TOO_LARGE")
    # Replacing 2 ASCII characters with one 2-byte character keeps the size.
    event = _event_of_size(MAX_PDU_SIZE)
    event["content"]["body"] = event["content"]["body"][:-2] + "é"
    validate_event(V10, event)


# -- per-key sizes -------------------------------------------------------------


def _id_of_bytes(sigil: str, n: int) -> str:
    domain = ":hs.example"
    return sigil + "a" * (n - 1 - len(domain)) + domain


@pytest.mark.parametrize(
    ("key", "make"),
    [
        ("sender", lambda n: _id_of_bytes("@", n)),
        ("room_id", lambda n: _id_of_bytes("!", n)),
        ("type", lambda n: "t" * n),
        ("state_key", lambda n: "s" * n),
    ],
)
def test_key_of_255_bytes_passes_and_256_is_too_large(key, make):
    assert len(make(255).encode()) == 255
    validate_event(V10, _pdu(**{key: make(255)}))
    _fails(V10, _pdu(**{key: make(256)}), "M_TOO_LARGE", key)


def test_v1_event_id_limit_is_255_bytes():
    validate_event(V1, _pdu(V1, event_id=_id_of_bytes("$", 255)))
    _fails(V1, _pdu(V1, event_id=_id_of_bytes("$", 256)), "M_TOO_LARGE", "event_id")


def test_key_limits_count_bytes_not_characters():
    # 128 two-byte characters: 128 characters but 256 bytes.
    _fails(V10, _pdu(state_key="é" * 128), "M_TOO_LARGE", "state_key")
    validate_event(V10, _pdu(state_key="é" * 127))


def test_referenced_event_ids_over_255_bytes_are_too_large():
    _fails(V10, _pdu(prev_events=["$" + "a" * 255]), "M_TOO_LARGE", "prev_events")


# -- required fields and types -----------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "type",
        "room_id",
        "sender",
        "content",
        "depth",
        "origin_server_ts",
        "prev_events",
        "auth_events",
        "hashes",
        "signatures",
    ],
)
def test_missing_required_field_is_bad_json(key):
    event = _pdu()
    del event[key]
    _fails(V10, event, "M_BAD_JSON", key)


def test_v1_format_requires_event_id_but_later_formats_do_not():
    event = _pdu(V1)
    del event["event_id"]
    _fails(V1, event, "M_BAD_JSON", "event_id")
    validate_event(V3, _pdu(V3))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("type", 5),
        ("room_id", None),
        ("sender", ["@a:hs"]),
        ("content", []),
        ("content", "text"),
        ("depth", "3"),
        ("depth", True),
        ("depth", 3.0),
        ("origin_server_ts", 1.5),
        ("origin_server_ts", False),
        ("prev_events", {"$p": {}}),
        ("auth_events", "$a"),
        ("hashes", []),
        ("hashes", {}),
        ("hashes", {"sha256": 5}),
        ("signatures", []),
        ("signatures", {"hs.example": "sig"}),
        ("signatures", {"hs.example": {"ed25519:1": 5}}),
        ("state_key", 5),
        ("state_key", None),
        ("unsigned", []),
        ("redacts", 5),
    ],
)
def test_ill_typed_field_is_bad_json(key, value):
    _fails(V5, _pdu(V5, **{key: value}), "M_BAD_JSON")


@pytest.mark.parametrize(
    "refs",
    [["$a:hs", {}], [["$a:hs"]], [["$a:hs", {}, {}]], [["$a:hs", "hash"]], [[5, {}]]],
)
def test_v1_format_refs_must_be_id_hash_pairs(refs):
    _fails(V1, _pdu(V1, prev_events=refs), "M_BAD_JSON", "prev_events")
    _fails(V1, _pdu(V1, auth_events=refs), "M_BAD_JSON", "auth_events")


@pytest.mark.parametrize("refs", [[["$a", {}]], [5], ["not-an-id"]])
def test_v3_plus_refs_must_be_plain_event_ids(refs):
    _fails(V3, _pdu(V3, prev_events=refs), "M_BAD_JSON", "prev_events")
    _fails(V11, _pdu(V11, auth_events=refs), "M_BAD_JSON", "auth_events")


def test_at_most_20_prev_events_and_10_auth_events():
    validate_event(V10, _pdu(prev_events=[f"$p{i}" for i in range(20)]))
    _fails(V10, _pdu(prev_events=[f"$p{i}" for i in range(21)]), "M_BAD_JSON", "prev_events")
    validate_event(V10, _pdu(auth_events=[f"$a{i}" for i in range(10)]))
    _fails(V10, _pdu(auth_events=[f"$a{i}" for i in range(11)]), "M_BAD_JSON", "auth_events")


def test_depth_must_be_non_negative_and_int64_in_lenient_versions():
    validate_event(V5, _pdu(V5, depth=0))
    _fails(V5, _pdu(V5, depth=-1), "M_BAD_JSON", "depth")
    validate_event(V5, _pdu(V5, depth=2**63 - 1))
    _fails(V5, _pdu(V5, depth=2**63), "M_BAD_JSON", "depth")
    _fails(V5, _pdu(V5, origin_server_ts=2**63), "M_BAD_JSON", "origin_server_ts")
    validate_event(V5, _pdu(V5, origin_server_ts=-(2**63)))


def test_v1_event_id_needs_sigil_and_domain():
    _fails(V1, _pdu(V1, event_id="$nodomain"), "M_INVALID_PARAM", "event_id")
    _fails(V1, _pdu(V1, event_id="e:hs.example"), "M_INVALID_PARAM", "event_id")


def test_non_mapping_event_is_bad_json():
    _fails(V10, ["not", "an", "event"], "M_BAD_JSON")


# -- identifier grammar -------------------------------------------------------


@pytest.mark.parametrize(
    "sender",
    [
        "alice:hs.example",
        "@alice",
        "@alice:",
        "@alice:bad_host",
        "@a\x00b:hs.example",
        "@alice:hs.example:99999999",
        "@alice:[::1",
        "@alice:[zz::1]",
        "@alice:hs.example:",
    ],
)
def test_malformed_sender_is_invalid_param(sender):
    _fails(V10, _pdu(sender=sender), "M_INVALID_PARAM", "sender")


@pytest.mark.parametrize(
    "sender",
    [
        "@alice:hs.example",
        "@ALICE:hs.example",
        "@:hs.example",
        "@ünïcode:hs.example",
        "@a:hs.example:8448",
        "@a:1.2.3.4",
        "@a:1.2.3.4:5",
        "@a:[1234:5678::abcd]",
        "@a:[1234:5678::abcd]:5678",
        "@a:localhost",
    ],
)
def test_historical_senders_and_all_server_name_forms_are_accepted(sender):
    validate_event(V10, _pdu(sender=sender))


@pytest.mark.parametrize("room_id", ["room:hs.example", "!:hs.example", "!room", "!room:bad host"])
def test_malformed_room_id_is_invalid_param(room_id):
    _fails(V10, _pdu(room_id=room_id), "M_INVALID_PARAM", "room_id")


def test_strict_user_id_grammar_for_new_ids():
    assert is_valid_user_id("@alice.b_c=d-e/f+g:hs.example", historical=False)
    assert not is_valid_user_id("@Alice:hs.example", historical=False)
    assert not is_valid_user_id("@:hs.example", historical=False)
    assert is_valid_user_id("@Alice:hs.example")


def test_server_name_port_is_at_most_five_digits():
    assert is_valid_server_name("hs.example:65535")
    assert is_valid_server_name("hs.example:1")
    assert not is_valid_server_name("hs.example:123456")
    assert not is_valid_server_name("hs.example:")
    assert not is_valid_server_name("[::1]x")
    assert not is_valid_server_name("")
    assert not is_valid_server_name("a" * 256)
    assert is_valid_server_name("a" * 255)


def test_room_id_limit_is_255_bytes():
    assert is_valid_room_id(_id_of_bytes("!", 255))
    assert not is_valid_room_id(_id_of_bytes("!", 256))


# -- strict canonical JSON (v6+) -------------------------------------------------

STRICT = [rv for rv in ALL if rv.strict_canonicaljson]
LENIENT = [rv for rv in ALL if not rv.strict_canonicaljson]


@pytest.mark.parametrize("rv", STRICT, ids=lambda rv: f"v{rv.identifier}")
@pytest.mark.parametrize("value", [2**53 - 1, -(2**53) + 1])
def test_integers_at_the_canonical_json_bounds_pass(rv, value):
    validate_event(rv, _pdu(rv, content={"n": value}))


@pytest.mark.parametrize("rv", STRICT, ids=lambda rv: f"v{rv.identifier}")
@pytest.mark.parametrize("value", [2**53, -(2**53), 2**64])
def test_integers_past_the_bounds_fail_anywhere_in_strict_versions(rv, value):
    _fails(rv, _pdu(rv, content={"deep": [{"n": value}]}), "M_BAD_JSON", "2\\*\\*53")
    _fails(
        rv, _pdu(rv, depth=value) if value > 0 else _pdu(rv, origin_server_ts=value), "M_BAD_JSON"
    )
    _fails(rv, _pdu(rv, unsigned={"n": value}), "M_BAD_JSON")


@pytest.mark.parametrize("rv", STRICT, ids=lambda rv: f"v{rv.identifier}")
def test_any_float_fails_in_strict_versions(rv):
    _fails(rv, _pdu(rv, content={"list": [1, 2, 3.0]}), "M_BAD_JSON", "float")
    _fails(rv, _pdu(rv, content={"f": 0.5}), "M_BAD_JSON", "float")


@pytest.mark.parametrize("rv", LENIENT, ids=lambda rv: f"v{rv.identifier}")
def test_lenient_versions_accept_floats_and_big_integers_in_content(rv):
    validate_event(rv, _pdu(rv, content={"f": 0.5, "n": 2**60}))


def test_validate_event_does_not_modify_the_event():
    event = _pdu(V11)
    before = copy.deepcopy(event)
    validate_event(V11, event)
    assert event == before


# -- parse_strict_json --------------------------------------------------------


def test_valid_json_parses():
    assert parse_strict_json(b'{"a": [1, 2.5, "\\u00e9", null, true]}') == {
        "a": [1, 2.5, "é", None, True]
    }
    assert parse_strict_json('{"é": 1}'.encode()) == {"é": 1}


@pytest.mark.parametrize(
    "body",
    [b"NaN", b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}', b"[1e400]"],
)
def test_non_finite_numbers_are_rejected(body):
    with pytest.raises(StrictJSONError):
        parse_strict_json(body)


@pytest.mark.parametrize(
    "body",
    [b'{"a": "\xff"}', b'"\xc3"', b'"\xed\xa0\x80"', b"\xef\xbb\xbf{}"],
)
def test_invalid_utf8_and_bom_are_rejected(body):
    with pytest.raises(StrictJSONError):
        parse_strict_json(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"{'a': 1}",
        b'{"a": 1,}',
        b"undefined",
        b'{"a": 1} x',
        b'"\\ud800"',
        b'{"\\udc00": 1}',
        b"[" * 100_000,
    ],
)
def test_non_json_is_rejected_with_a_value_error(body):
    with pytest.raises(ValueError) as info:
        parse_strict_json(body)
    assert isinstance(info.value, StrictJSONError) and str(info.value)


def test_nesting_deeper_than_the_limit_is_bad_json():
    """MAX_JSON_DEPTH containers parse; one more is M_BAD_JSON (valid JSON, refused)."""
    from atrium.events.validation import MAX_JSON_DEPTH, JSONTooDeepError

    ok = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert parse_strict_json(ok) is not None
    for depth in (MAX_JSON_DEPTH + 1, 900, 100_000):
        for raw in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
            with pytest.raises(JSONTooDeepError) as info:
                parse_strict_json(raw)
            assert info.value.errcode == "M_BAD_JSON"
