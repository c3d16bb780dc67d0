"""Signing keys: key IDs, the one-line key file format, verify key encoding."""

from __future__ import annotations

import os
import stat

import pytest
from unpaddedbase64 import encode_base64

from atrium.crypto.keys import (
    SigningKeyFileError,
    decode_verify_key_base64,
    decode_verify_key_id,
    encode_verify_key_base64,
    format_signing_key_line,
    generate_signing_key,
    get_verify_key,
    key_id,
    parse_signing_keys,
    read_signing_key_file,
    signing_key_from_seed,
    write_signing_key_file,
)

# appendices "Cryptographic Test Vectors" / "Signing Key": the seed used by
# every test vector, with KEY_ID "ed25519:1".
SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"


def test_generated_key_has_ed25519_key_id_with_its_version():
    key = generate_signing_key("abc_1")
    assert key_id(key) == "ed25519:abc_1"
    assert key_id(get_verify_key(key)) == "ed25519:abc_1"


def test_generated_keys_without_version_get_distinct_valid_versions():
    versions = {generate_signing_key().version for _ in range(20)}
    assert len(versions) > 1
    assert all(v.startswith("a_") and len(v) == 6 for v in versions)


@pytest.mark.parametrize("version", ["", "a:b", "a b", "ключ", "a-b"])
def test_key_versions_outside_the_allowed_characters_are_refused(version):
    with pytest.raises(ValueError):
        generate_signing_key(version)


def test_key_line_is_algorithm_version_and_unpadded_seed():
    seed = bytes(range(32))
    key = signing_key_from_seed("1", encode_base64(seed))
    assert format_signing_key_line(key) == f"ed25519 1 {encode_base64(seed)}"
    assert bytes(key) == seed


def test_spec_seed_decodes_despite_non_canonical_trailing_bits():
    # The appendix's seed ends in "1", whose low bits fall outside the 32
    # bytes; it must still decode to the same key as the canonical encoding.
    key = signing_key_from_seed("1", SPEC_SEED)
    assert format_signing_key_line(key) == "ed25519 1 " + SPEC_SEED[:-1] + "0"


def test_several_keys_round_trip_through_the_key_file(tmp_path):
    keys = [generate_signing_key("a"), generate_signing_key("b")]
    path = tmp_path / "signing.key"
    write_signing_key_file(path, keys)
    text = path.read_text()
    assert text.count("\n") == 2 and "=" not in text
    read_back = read_signing_key_file(path)
    assert [key_id(k) for k in read_back] == ["ed25519:a", "ed25519:b"]
    assert [bytes(k) for k in read_back] == [bytes(k) for k in keys]


def test_key_file_is_created_owner_only(tmp_path):
    path = tmp_path / "signing.key"
    write_signing_key_file(path, [generate_signing_key("a")])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_blank_and_comment_lines_in_key_file_are_skipped():
    text = f"\n# old key removed\ned25519 1 {SPEC_SEED}\n\n"
    [key] = parse_signing_keys(text)
    assert key_id(key) == "ed25519:1"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("ed25519 1", "line 1"),
        (f"\ncurve25519 1 {SPEC_SEED}", "line 2"),
        ("ed25519 1 !!!notbase64", "line 1"),
        ("ed25519 1 AAAA", "32 bytes"),
    ],
)
def test_malformed_key_lines_name_the_line(text, needle):
    with pytest.raises(SigningKeyFileError, match=needle):
        parse_signing_keys(text)


def test_empty_key_file_is_an_error(tmp_path):
    path = tmp_path / "empty.key"
    path.write_text("\n")
    with pytest.raises(SigningKeyFileError):
        read_signing_key_file(path)


def test_verify_key_base64_round_trips_and_verifies_signatures():
    key = generate_signing_key("v")
    b64 = encode_verify_key_base64(get_verify_key(key))
    assert "=" not in b64 and len(b64) == 43
    decoded = decode_verify_key_base64("ed25519", "v", b64)
    assert key_id(decoded) == "ed25519:v"
    decoded.verify(b"msg", key.sign(b"msg").signature)
    assert key_id(decode_verify_key_id("ed25519:v", b64)) == "ed25519:v"


@pytest.mark.parametrize(
    ("algorithm", "b64"),
    [("curve25519", "A" * 43), ("ed25519", "A" * 10), ("ed25519", "not base64!")],
)
def test_bad_published_verify_keys_raise_value_error(algorithm, b64):
    with pytest.raises(ValueError):
        decode_verify_key_base64(algorithm, "1", b64)


def test_key_id_without_version_is_refused():
    with pytest.raises(ValueError):
        decode_verify_key_id("ed25519", "A" * 43)
