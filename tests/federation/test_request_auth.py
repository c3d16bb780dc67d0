"""X-Matrix request authentication: header parsing, signing and verifying,
and each way a request can fail to authenticate (a 401 M_UNAUTHORIZED)."""

from __future__ import annotations

import pytest
import pytest_twisted

from atrium.crypto.keys import generate_signing_key, get_verify_key
from atrium.errors import Unauthorized
from atrium.federation.keyring import KeyLookupError
from atrium.federation.request_auth import (
    RequestAuthenticator,
    authorization_headers,
    parse_authorization_header,
)
from tests.conftest import POSTGRES_URL
from tests.federation.support import federating_server, raw_federation_request, x_matrix

KEY = generate_signing_key("k1")


def test_header_parsing_follows_rfc9110_auth_params():
    auth = parse_authorization_header(
        'X-Matrix origin="origin.example:8448",Destination=dest.example, key="ed25519:k1",'
        '  sig="ab\\"c"'
    )
    assert auth.origin == "origin.example:8448"
    assert auth.destination == "dest.example"
    assert auth.key == "ed25519:k1"
    assert auth.sig == 'ab"c'
    # Unquoted values may contain colons; unknown parameters are ignored.
    auth = parse_authorization_header("x-matrix origin=o.example:80,key=ed25519:k,sig=s,foo=bar")
    assert (auth.origin, auth.key, auth.sig, auth.destination) == (
        "o.example:80",
        "ed25519:k",
        "s",
        None,
    )
    for bad in ("Bearer abc", 'X-Matrix origin="o",key="k"', 'X-Matrix origin="unterminated'):
        with pytest.raises(ValueError):
            parse_authorization_header(bad)


async def _lookup(server: str, key_id: str):
    if server == "origin.example" and key_id == "ed25519:k1":
        return get_verify_key(KEY)
    raise KeyLookupError(f"{server} has no key {key_id}")


def _headers(method="PUT", uri="/_matrix/federation/v1/send/1", content=None, dest="dest.example"):
    return authorization_headers("origin.example", dest, method, uri, content, KEY)


@pytest_twisted.ensureDeferred
async def test_signed_request_round_trip_and_every_failure():
    auth = RequestAuthenticator("dest.example", _lookup)
    content = {"pdus": [], "edus": []}
    uri = "/_matrix/federation/v1/send/1"
    ok = await auth.authenticate("PUT", uri, _headers(content=content), content)
    assert ok == "origin.example"
    # A GET without a body signs no content.
    get_uri = "/_matrix/federation/v1/state_ids/!r:x?event_id=%24e"
    headers = _headers("GET", get_uri, None)
    assert await auth.authenticate("GET", get_uri, headers, None) == "origin.example"

    failures = {
        "no header": ("PUT", uri, [], content),
        "another scheme": ("PUT", uri, [b"Bearer abc"], content),
        "changed body": ("PUT", uri, _headers(content=content), {"pdus": [1]}),
        "changed uri": ("PUT", uri + "x", _headers(content=content), content),
        "changed method": ("POST", uri, _headers(content=content), content),
        "other destination": ("PUT", uri, _headers(content=content, dest="else.example"), content),
        "unknown key": (
            "PUT",
            uri,
            [_headers(content=content)[0].replace(b"ed25519:k1", b"ed25519:k2")],
            content,
        ),
        "bad signature": (
            "PUT",
            uri,
            [_headers(content=content)[0][:-6] + b'AAAAA"'],
            content,
        ),
    }
    for name, (method, u, hdrs, body) in failures.items():
        with pytest.raises(Unauthorized):
            await auth.authenticate(method, u, hdrs, body)
            pytest.fail(f"{name} was accepted")


@pytest_twisted.ensureDeferred
async def test_requests_over_tls_need_a_current_key_of_the_origin(db_kind, tmp_path):
    old_key = generate_signing_key("old")
    from atrium.crypto.keys import encode_verify_key_base64

    old_entry = {
        f"ed25519:{old_key.version}": {
            "key": encode_verify_key_base64(get_verify_key(old_key)),
            "expired_ts": 1000,
        }
    }
    async with federating_server(tmp_path, "a", db_kind, POSTGRES_URL) as a:
        async with federating_server(tmp_path, "b", federation={"old_verify_keys": old_entry}) as b:
            alice = await a.anon.register("alice")
            uri = "/_matrix/federation/v1/query/profile?user_id=" + alice.user_id.replace(
                "@", "%40"
            ).replace(":", "%3A")

            def signed_by(key, origin=b.name, destination=a.name, method="GET", u=uri):
                (value,) = authorization_headers(origin, destination, method, u, None, key)
                return value.decode()

            # B's current key: accepted.
            code, body = await raw_federation_request(
                b.hs, a.name, "GET", uri, authorization=[signed_by(b.hs.signing_key)]
            )
            assert code == 200, body
            # B's old (expired) key: only good for old events, never requests.
            code, body = await raw_federation_request(
                b.hs, a.name, "GET", uri, authorization=[signed_by(old_key)]
            )
            assert (code, body["errcode"]) == (401, "M_UNAUTHORIZED")
            # A key B never published.
            code, body = await raw_federation_request(
                b.hs, a.name, "GET", uri, authorization=[signed_by(generate_signing_key("zz"))]
            )
            assert (code, body["errcode"]) == (401, "M_UNAUTHORIZED")
            # Signed for another destination.
            code, body = await raw_federation_request(
                b.hs,
                a.name,
                "GET",
                uri,
                authorization=[signed_by(b.hs.signing_key, destination="elsewhere.example")],
            )
            assert (code, body["errcode"]) == (401, "M_UNAUTHORIZED")
            # A forged signature naming B's real key.
            good = signed_by(b.hs.signing_key)
            sig = good.rsplit('sig="', 1)[1].rstrip('"')
            forged = x_matrix(b.name, a.name, f"ed25519:{b.hs.signing_key.version}", sig[::-1])
            code, body = await raw_federation_request(
                b.hs, a.name, "GET", uri, authorization=[forged]
            )
            assert (code, body["errcode"]) == (401, "M_UNAUTHORIZED")
            # A claimed origin that cannot be reached to fetch its keys.
            code, body = await raw_federation_request(
                b.hs,
                a.name,
                "GET",
                uri,
                authorization=[signed_by(b.hs.signing_key, origin="unreachable.invalid")],
            )
            assert (code, body["errcode"]) == (401, "M_UNAUTHORIZED")
