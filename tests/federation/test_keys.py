"""Server keys: our signed key response, checking received ones, the notary
endpoints and the keyring's cache and validity rules."""

from __future__ import annotations

import copy

import pytest
import pytest_twisted

from atrium.crypto.event_signing import SignatureVerifyError, sign_json_object
from atrium.crypto.keys import encode_verify_key_base64, generate_signing_key, get_verify_key
from atrium.events.builder import build_event
from atrium.events.room_versions import V4, V10
from atrium.federation.keyring import KeyLookupError, Keyring
from atrium.federation.keys import (
    MAX_KEY_VALIDITY_MS,
    KeyResponseError,
    build_server_keys,
    parse_server_keys,
)
from atrium.federation.store import FederationStore, StoredKey
from tests.conftest import POSTGRES_URL
from tests.federation.support import federating_server

NOW = 1_700_000_000_000


def test_our_key_response_verifies_and_lists_old_keys():
    key = generate_signing_key("a1")
    old = generate_signing_key("old")
    old_b64 = encode_verify_key_base64(get_verify_key(old))
    response = build_server_keys("hs.example", key, NOW, [("ed25519:old", old_b64, NOW - 5)])
    parsed = parse_server_keys(copy.deepcopy(response), "hs.example", NOW)
    assert response["valid_until_ts"] > NOW
    assert response["old_verify_keys"] == {"ed25519:old": {"key": old_b64, "expired_ts": NOW - 5}}
    by_id = {k.key_id: k for k in parsed.keys}
    assert by_id["ed25519:a1"].expired_ts is None
    assert by_id["ed25519:old"].expired_ts == NOW - 5


def test_key_response_checks():
    key = generate_signing_key("a1")
    good = build_server_keys("hs.example", key, NOW)
    # Asked about another server.
    with pytest.raises(KeyResponseError):
        parse_server_keys(copy.deepcopy(good), "other.example", NOW)
    # Changed after signing.
    tampered = copy.deepcopy(good)
    tampered["valid_until_ts"] += 1
    with pytest.raises(KeyResponseError):
        parse_server_keys(tampered, "hs.example", NOW)
    # A listed verify key that did not sign the response.
    extra = generate_signing_key("b2")
    unsigned_key = copy.deepcopy(good)
    del unsigned_key["signatures"]
    unsigned_key["verify_keys"]["ed25519:b2"] = {
        "key": encode_verify_key_base64(get_verify_key(extra))
    }
    sign_json_object(unsigned_key, "hs.example", key)
    with pytest.raises(KeyResponseError, match="ed25519:b2"):
        parse_server_keys(unsigned_key, "hs.example", NOW)


def test_key_validity_is_capped_at_seven_days():
    key = generate_signing_key("a1")
    response = build_server_keys("hs.example", key, NOW, validity_ms=365 * 24 * 3600 * 1000)
    parsed = parse_server_keys(response, "hs.example", NOW)
    assert parsed.keys[0].valid_until_ts == NOW + MAX_KEY_VALIDITY_MS


def _event(room_version, key, ts):
    return build_event(
        room_version=room_version,
        type="m.room.message",
        sender="@u:remote.example",
        room_id="!r:remote.example",
        content={"body": "x"},
        prev_event_ids=["$p"],
        auth_event_ids=["$a"],
        depth=2,
        origin_server_ts=ts,
        server_name="remote.example",
        signing_key=key,
    )


@pytest_twisted.ensureDeferred
async def test_keyring_enforces_key_validity_only_from_room_v5(db):
    from twisted.internet import task

    clock_reactor = task.Clock()
    clock_reactor.advance(NOW / 1000)
    from atrium.util.clock import Clock

    store = FederationStore(db)
    remote_key = generate_signing_key("r1")
    await store.store_server_keys(
        "remote.example",
        "remote.example",
        NOW - 10_000,
        NOW - 5_000,
        {},
        [
            StoredKey(
                "ed25519:r1",
                encode_verify_key_base64(get_verify_key(remote_key)),
                NOW - 5_000,
                None,
                NOW - 10_000,
            )
        ],
    )
    keyring = Keyring(
        store=store,
        client=None,
        clock=Clock(clock_reactor),
        server_name="us.example",
        signing_key=generate_signing_key("us"),
    )
    # Signed before the key's valid_until_ts: fine in any version.
    early = _event(V10, remote_key, NOW - 6_000)
    await keyring.verify_event(V10, early.as_dict_ref())
    # Signed after it: refused where key validity is enforced (v5+) ...
    late = _event(V10, remote_key, NOW)
    with pytest.raises(SignatureVerifyError):
        await keyring.verify_event(V10, late.as_dict_ref())
    # ... and accepted where it is ignored (rooms 1-4).
    await keyring.verify_event(V4, _event(V4, remote_key, NOW).as_dict_ref())
    # An expired key never authenticates a request.
    with pytest.raises(KeyLookupError):
        await keyring.get_request_key("remote.example", "ed25519:r1")
    # A forged signature is refused even with a valid key.
    forged = early.get_pdu_json()
    forged["signatures"]["remote.example"]["ed25519:r1"] = forged["signatures"]["remote.example"][
        "ed25519:r1"
    ][::-1]
    with pytest.raises(SignatureVerifyError):
        await keyring.verify_event(V10, forged)


@pytest_twisted.ensureDeferred
async def test_keys_served_fetched_cached_and_notarised(db_kind, tmp_path):
    async with federating_server(tmp_path, "a", db_kind, POSTGRES_URL) as a:
        async with federating_server(tmp_path, "b") as b:
            # B fetches A's key endpoint over TLS; the answer is A-signed.
            raw = await b.hs.federation.client.get_json(
                a.name, "/_matrix/key/v2/server", sign=False
            )
            parsed = parse_server_keys(raw, a.name, b.hs.clock.time_msec())
            a_key_id = f"ed25519:{a.hs.signing_key.version}"
            assert {k.key_id for k in parsed.keys} == {a_key_id}

            # The keyring fetches once and then answers from the database.
            key = await b.hs.federation.keyring.get_request_key(a.name, a_key_id)
            assert key.encode() == get_verify_key(a.hs.signing_key).encode()
            stored = await b.hs.federation.store.get_server_keys(a.name)
            fetched_ts = stored[a_key_id].fetched_ts
            assert stored[a_key_id].valid_until_ts <= fetched_ts + MAX_KEY_VALIDITY_MS
            await b.hs.federation.keyring.get_request_key(a.name, a_key_id)
            assert (await b.hs.federation.store.get_server_keys(a.name))[
                a_key_id
            ].fetched_ts == fetched_ts

            # Notary: A relays B's keys, signed by B and by A.
            answer = await b.hs.federation.client.post_json(
                a.name, "/_matrix/key/v2/query", {"server_keys": {b.name: {}}}
            )
            (relayed,) = answer["server_keys"]
            parse_server_keys(copy.deepcopy(relayed), b.name, b.hs.clock.time_msec())
            assert set(relayed["signatures"]) == {a.name, b.name}
            from atrium.crypto.event_signing import verify_json_object

            verify_json_object(relayed, a.name, {a_key_id: get_verify_key(a.hs.signing_key)})
            own = await b.hs.federation.client.get_json(
                a.name, f"/_matrix/key/v2/query/{a.name}", sign=False
            )
            assert [r["server_name"] for r in own["server_keys"]] == [a.name]
            # A server nobody can reach and nobody cached: an empty list.
            nobody = await b.hs.federation.client.get_json(
                a.name, "/_matrix/key/v2/query/unreachable.invalid", sign=False
            )
            assert nobody == {"server_keys": []}


@pytest_twisted.ensureDeferred
async def test_keys_of_an_unreachable_server_come_from_a_trusted_notary(tmp_path):
    from tests.federation.support import free_port

    async with federating_server(tmp_path, "notary") as notary:
        # A server that is down now, whose keys the notary fetched earlier.
        gone_name = f"localhost:{free_port()}"
        gone_key = generate_signing_key("g1")
        now = notary.hs.clock.time_msec()
        response = build_server_keys(gone_name, gone_key, now)
        parsed = parse_server_keys(copy.deepcopy(response), gone_name, now)
        await notary.hs.federation.store.store_server_keys(
            gone_name,
            gone_name,
            now,
            parsed.valid_until_ts,
            parsed.response,
            [StoredKey(k.key_id, k.key_base64, k.valid_until_ts, None, now) for k in parsed.keys],
        )
        async with federating_server(
            tmp_path, "a", federation={"trusted_key_servers": [notary.name]}
        ) as a:
            keys = await a.hs.federation.keyring.get_event_keys(gone_name, ["ed25519:g1"], None)
            assert keys["ed25519:g1"].encode() == get_verify_key(gone_key).encode()
            stored = await a.hs.federation.store.get_key_response(gone_name)
            assert stored is not None
            # Only the server's own signature is kept from a relayed answer.
            assert set(stored[0]["signatures"]) == {gone_name}

        # A notary cannot vouch for keys the server did not sign itself.
        forged = build_server_keys(gone_name, generate_signing_key("g1"), now)
        forged["verify_keys"] = response["verify_keys"]
        with pytest.raises(KeyResponseError):
            parse_server_keys(forged, gone_name, now)
