"""Server signing keys: generation, the signing key file, verify keys.

A server signs events and federation requests with ed25519 keys. Each key has
a *key ID* ``ed25519:<version>`` (spec: appendices "Signing Details"; the
version must match ``[a-zA-Z0-9_]``, server-server API "Publishing Keys").

The signing key file holds one key per line in the format shared by Matrix
homeservers, so a key file can move between implementations::

    ed25519 <version> <unpadded base64 of the 32-byte seed>

Blank lines and lines starting with ``#`` are ignored when reading.
"""

from __future__ import annotations

import os
import re
import secrets
import string
from collections.abc import Iterable
from pathlib import Path

import nacl.exceptions
import nacl.signing
import signedjson.key
from signedjson.types import SigningKey, VerifyKey
from unpaddedbase64 import decode_base64, encode_base64

ED25519 = "ed25519"
_SEED_BYTES = 32

# server-server API, `verify_keys`: "The version must have characters matching
# the regular expression [a-zA-Z0-9_]".
_KEY_VERSION_RE = re.compile(r"^[a-zA-Z0-9_]+$")


class SigningKeyFileError(ValueError):
    """The signing key file (or one of its lines) cannot be understood."""


def is_valid_key_version(version: str) -> bool:
    """True when ``version`` is allowed as the version part of a key ID."""
    return bool(_KEY_VERSION_RE.match(version))


def generate_signing_key(version: str | None = None) -> SigningKey:
    """A fresh ed25519 signing key.

    Without ``version`` a random one of the form ``a_XXXX`` is chosen, so two
    keys generated for the same server are unlikely to share a key ID.
    """
    if version is None:
        alphabet = string.ascii_letters + string.digits
        version = "a_" + "".join(secrets.choice(alphabet) for _ in range(4))
    if not is_valid_key_version(version):
        raise ValueError(f"key version {version!r} must match [a-zA-Z0-9_]+")
    return signedjson.key.generate_signing_key(version)


def signing_key_from_seed(version: str, seed_base64: str) -> SigningKey:
    """Rebuild a signing key from the unpadded base64 of its 32-byte seed."""
    try:
        seed = decode_base64(seed_base64)
    except Exception as e:
        raise ValueError(f"signing key seed is not valid base64: {e}") from e
    if len(seed) != _SEED_BYTES:
        raise ValueError(f"an ed25519 seed is {_SEED_BYTES} bytes, got {len(seed)}")
    return signedjson.key.decode_signing_key_base64(ED25519, version, seed_base64)


def key_id(key: SigningKey | VerifyKey) -> str:
    """The key ID (``ed25519:<version>``) of a signing or verify key."""
    return f"{key.alg}:{key.version}"


def get_verify_key(signing_key: SigningKey) -> VerifyKey:
    """The public (verify) half of a signing key, carrying the same key ID."""
    return signedjson.key.get_verify_key(signing_key)


def encode_verify_key_base64(verify_key: VerifyKey | nacl.signing.VerifyKey) -> str:
    """Unpadded base64 of the 32 raw public key bytes (as published in `verify_keys`)."""
    return encode_base64(verify_key.encode())


def decode_verify_key_base64(algorithm: str, version: str, key_base64: str) -> VerifyKey:
    """A VerifyKey from its unpadded base64, as found in a server's key response.

    Raises ValueError for an unsupported algorithm, bad base64 or a key of the
    wrong length, so callers can treat any bad published key the same way.
    """
    if algorithm != ED25519:
        raise ValueError(f"unsupported key algorithm {algorithm!r}")
    try:
        raw = decode_base64(key_base64)
    except Exception as e:
        raise ValueError(f"verify key {algorithm}:{version} is not valid base64") from e
    try:
        key = nacl.signing.VerifyKey(raw)
    except (nacl.exceptions.ValueError, nacl.exceptions.TypeError) as e:
        raise ValueError(f"verify key {algorithm}:{version} is not a valid ed25519 key: {e}") from e
    # signedjson's helpers read the algorithm and version from attributes set
    # on the nacl object.
    key.alg = algorithm  # type: ignore[attr-defined]
    key.version = version  # type: ignore[attr-defined]
    return key  # type: ignore[return-value]


def decode_verify_key_id(key_id_str: str, key_base64: str) -> VerifyKey:
    """Like decode_verify_key_base64, but taking a whole key ID ``alg:version``."""
    algorithm, sep, version = key_id_str.partition(":")
    if not sep or not version:
        raise ValueError(f"malformed key ID {key_id_str!r}")
    return decode_verify_key_base64(algorithm, version, key_base64)


# -- the signing key file ------------------------------------------------


def format_signing_key_line(key: SigningKey) -> str:
    """One line of the signing key file (without the newline)."""
    return f"{key.alg} {key.version} {signedjson.key.encode_signing_key_base64(key)}"


def parse_signing_keys(text: str) -> list[SigningKey]:
    """All keys in the text of a signing key file, in file order."""
    keys: list[SigningKey] = []
    for lineno, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3:
            raise SigningKeyFileError(
                f"line {lineno}: expected 'ed25519 <version> <base64 seed>', got {len(parts)} fields"
            )
        algorithm, version, seed_base64 = parts
        if algorithm != ED25519:
            raise SigningKeyFileError(f"line {lineno}: unsupported key algorithm {algorithm!r}")
        try:
            keys.append(signing_key_from_seed(version, seed_base64))
        except ValueError as e:
            raise SigningKeyFileError(f"line {lineno}: {e}") from e
    return keys


def format_signing_keys(keys: Iterable[SigningKey]) -> str:
    """The text of a signing key file holding ``keys``."""
    return "".join(format_signing_key_line(k) + "\n" for k in keys)


def read_signing_key_file(path: str | os.PathLike[str]) -> list[SigningKey]:
    """Keys from a signing key file; raises SigningKeyFileError if it has none."""
    text = Path(path).read_text(encoding="utf-8")
    keys = parse_signing_keys(text)
    if not keys:
        raise SigningKeyFileError(f"{path}: no signing key found")
    return keys


def write_signing_key_file(path: str | os.PathLike[str], keys: Iterable[SigningKey]) -> None:
    """Write ``keys`` to ``path``, readable by the owner only (it holds secrets).

    The file is created with mode 0600 before any secret is written to it.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(format_signing_keys(keys))
