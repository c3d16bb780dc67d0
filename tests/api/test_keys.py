"""E2EE key endpoints over HTTP: upload, query, claim (one-time then fallback), cross-signing."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer

from atrium.sync.e2ee import KeyCountsSection
from tests.support.e2ee import (
    V3,
    TestDevice,
    cross_signing_key,
    run_section,
    section_of,
    signed,
    upload,
)


def forge(obj, user_id, real_key, claimed_key):
    """``obj`` signed by ``real_key`` but claiming to be signed by ``claimed_key``."""
    out = signed(obj, user_id, real_key)
    sig = out["signatures"][user_id].pop(f"ed25519:{real_key.version}")
    out["signatures"][user_id][f"ed25519:{claimed_key.version}"] = sig
    return out


@pytest_twisted.ensureDeferred
async def test_upload_query_and_claim_one_time_keys_then_fallback(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    dev = TestDevice(alice.user_id, alice.device_id)
    first = await upload(
        alice,
        {
            "device_keys": dev.device_keys(),
            "one_time_keys": dev.one_time_keys(["A1", "A2", "A3"]),
            "fallback_keys": dev.one_time_keys(["F1"], fallback=True),
        },
    )
    assert first == {"one_time_key_counts": {"signed_curve25519": 3}}

    # Bob sees alice's device keys as uploaded, with her device's display name.
    renamed = await alice.put(f"{V3}/devices/{alice.device_id}", {"display_name": "Phone"})
    assert renamed.code == 200
    queried = await bob.post(
        f"{V3}/keys/query",
        {"device_keys": {alice.user_id: [], "@zed:remote.example": []}, "timeout": 10},
    )
    assert queried.code == 200, queried
    got = queried.json["device_keys"][alice.user_id][alice.device_id]
    uploaded = dev.device_keys()
    assert {k: got[k] for k in uploaded} == uploaded
    assert got["unsigned"] == {"device_display_name": "Phone"}
    assert set(queried.json["failures"]) == {"remote.example"}
    # Asking for an unknown device returns the user with no devices.
    only = await bob.post(f"{V3}/keys/query", {"device_keys": {alice.user_id: ["NOPE"]}})
    assert only.json["device_keys"] == {alice.user_id: {}}

    # Claims hand out each one-time key once, then the fallback key repeatedly.
    claimed = []
    for _ in range(5):
        resp = await bob.post(
            f"{V3}/keys/claim",
            {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}},
        )
        assert resp.code == 200, resp
        (key_id,) = resp.json["one_time_keys"][alice.user_id][alice.device_id]
        claimed.append(key_id)
    assert sorted(claimed[:3]) == [f"signed_curve25519:A{i}" for i in (1, 2, 3)]
    assert claimed[3:] == ["signed_curve25519:F1", "signed_curve25519:F1"]

    # Alice's /sync reports the exhausted keys and the used fallback key.
    counts = section_of(hs, KeyCountsSection)
    response, _ = await run_section(counts, alice, None, hs.current_token())
    assert response["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert response["device_unused_fallback_key_types"] == []
    # A new fallback key is unused again; re-uploading it keeps it unused.
    await upload(alice, {"fallback_keys": dev.one_time_keys(["F2"], fallback=True)})
    response, _ = await run_section(counts, alice, None, hs.current_token())
    assert response["device_unused_fallback_key_types"] == ["signed_curve25519"]
    # Nothing else in an incremental response: the counts are not added alone.
    response, _ = await run_section(counts, alice, hs.current_token(), hs.current_token())
    assert response == {}


@pytest_twisted.ensureDeferred
async def test_concurrent_claims_never_hand_out_a_one_time_key_twice(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    dev = TestDevice(alice.user_id, alice.device_id)
    await upload(
        alice,
        {
            "one_time_keys": dev.one_time_keys([f"K{i}" for i in range(8)]),
            "fallback_keys": dev.one_time_keys(["FB"], fallback=True),
        },
    )
    body = {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}}
    results = await defer.gatherResults(
        [defer.ensureDeferred(bob.post(f"{V3}/keys/claim", body)) for _ in range(12)]
    )
    ids = [next(iter(r.json["one_time_keys"][alice.user_id][alice.device_id])) for r in results]
    one_time = [i for i in ids if i != "signed_curve25519:FB"]
    assert sorted(one_time) == sorted(f"signed_curve25519:K{i}" for i in range(8))
    assert ids.count("signed_curve25519:FB") == 4


@pytest_twisted.ensureDeferred
async def test_upload_rejects_bad_keys_with_matrix_errors(server):
    hs, anon = server
    alice = await anon.register("alice")
    dev = TestDevice(alice.user_id, alice.device_id)
    other = TestDevice(alice.user_id, "OTHERDEVICE")

    async def expect(body, code, errcode):
        resp = await alice.post(f"{V3}/keys/upload", body)
        assert (resp.code, resp.json.get("errcode")) == (code, errcode), (body, resp)

    await expect({"device_keys": other.device_keys()}, 400, "M_INVALID_PARAM")
    unsigned = dev.device_keys()
    del unsigned["signatures"]
    await expect({"device_keys": unsigned}, 400, "M_BAD_JSON")
    await expect({"device_keys": {**dev.device_keys(), "keys": []}}, 400, "M_BAD_JSON")
    await expect({"one_time_keys": ["x"]}, 400, "M_BAD_JSON")
    await expect({"one_time_keys": {"no_colon": "k"}}, 400, "M_BAD_JSON")
    await expect({"one_time_keys": {"signed_curve25519:X": {"nokey": 1}}}, 400, "M_BAD_JSON")
    two_fallbacks = dev.one_time_keys(["F1", "F2"], fallback=True)
    await expect({"fallback_keys": two_fallbacks}, 400, "M_INVALID_PARAM")

    # Re-uploading an identical one-time key is harmless; changing it is not.
    keys = dev.one_time_keys(["S1"])
    assert (await upload(alice, {"one_time_keys": keys}))["one_time_key_counts"] == {
        "signed_curve25519": 1
    }
    assert (await upload(alice, {"one_time_keys": keys}))["one_time_key_counts"] == {
        "signed_curve25519": 1
    }
    await expect(
        {"one_time_keys": {"signed_curve25519:S1": {"key": "other"}}}, 400, "M_INVALID_PARAM"
    )
    # An empty upload just reports the counts.
    assert await upload(alice, {}) == {"one_time_key_counts": {"signed_curve25519": 1}}


@pytest_twisted.ensureDeferred
async def test_every_keys_endpoint_answers_bad_input_with_4xx(server):
    hs, anon = server
    alice = await anon.register("alice")
    common = [b"not json", b"[1, 2]", b"{"]
    endpoints = {
        ("POST", "/keys/upload"): [
            b'{"device_keys": 5}',
            b'{"one_time_keys": "x"}',
            b'{"fallback_keys": {"a:b": 7}}',
            b'{"one_time_keys": {"\\u0000:b": "k"}}',
            b'{"one_time_keys": {"alg:k": 1.5}}',
        ],
        ("POST", "/keys/query"): [
            b"{}",
            b'{"device_keys": 5}',
            b'{"device_keys": {"notauser": []}}',
            b'{"device_keys": {"@a:b": "D"}}',
            b'{"device_keys": {"@a\\u0000:b": []}}',
            b'{"device_keys": {"@a:b": ["\\ud800"]}}',
        ],
        ("POST", "/keys/claim"): [
            b"{}",
            b'{"one_time_keys": []}',
            b'{"one_time_keys": {"@a:b": 5}}',
            b'{"one_time_keys": {"@alice:test.local": {"\\ud800": "alg"}}}',
            b'{"one_time_keys": {"@alice:test.local": {"D": 3}}}',
        ],
        ("POST", "/keys/device_signing/upload"): [
            b'{"master_key": 3}',
            b'{"master_key": {"user_id": "@alice:test.local", "usage": ["master"], "keys": {}}}',
            b'{"master_key": {"user_id": "@bob:test.local", "usage": ["master"],'
            b' "keys": {"ed25519:k": "k"}}}',
            b'{"master_key": {"user_id": "@alice:test.local", "usage": "master",'
            b' "keys": {"ed25519:k": "k"}}}',
        ],
        ("POST", "/keys/signatures/upload"): [b'{"notauser": {}}', b'{"@x:y": 7}'],
        ("PUT", "/sendToDevice/m.test/t1"): [
            b"{}",
            b'{"messages": []}',
            b'{"messages": {"nope": {}}}',
            b'{"messages": {"@a:b": {"D": 1}}}',
            b'{"messages": {"@a:b": []}}',
        ],
    }
    for (method, path), bodies in endpoints.items():
        for raw in common + bodies:
            resp = await alice.request(method, V3 + path, raw=raw)
            assert 400 <= resp.code < 500, (path, raw, resp)
            assert resp.json["errcode"].startswith("M_"), resp
        unauthenticated = await alice.request(method, V3 + path, body={}, token=False)
        assert unauthenticated.json["errcode"] == "M_MISSING_TOKEN"
    for query in ({}, {"from": "s1"}, {"from": "bad", "to": "s1"}, {"from": "s1", "to": "s-1"}):
        resp = await alice.get(f"{V3}/keys/changes", query=query)
        assert resp.code == 400 and resp.json["errcode"] in ("M_MISSING_PARAM", "M_INVALID_PARAM")


@pytest_twisted.ensureDeferred
async def test_cross_signing_keys_and_signatures(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    dev = TestDevice(alice.user_id, alice.device_id)
    await upload(alice, {"device_keys": dev.device_keys()})

    master, master_key = cross_signing_key(alice.user_id, "master")
    ssk_base, ssk_key = cross_signing_key(alice.user_id, "self_signing")
    usk_base, usk_key = cross_signing_key(alice.user_id, "user_signing")
    ssk = signed(ssk_base, alice.user_id, master_key)
    usk = signed(usk_base, alice.user_id, master_key)

    # A self-signing key not signed by the master key is refused.
    bad = await alice.post(
        f"{V3}/keys/device_signing/upload",
        {
            "master_key": master,
            "self_signing_key": forge(ssk_base, alice.user_id, usk_key, master_key),
        },
    )
    assert bad.code == 400 and bad.json["errcode"] == "M_INVALID_SIGNATURE", bad
    no_master = await alice.post(f"{V3}/keys/device_signing/upload", {"self_signing_key": ssk})
    assert no_master.code == 400 and no_master.json["errcode"] == "M_MISSING_PARAM"

    keys = {"master_key": master, "self_signing_key": ssk, "user_signing_key": usk}
    # The first upload needs no user-interactive auth; an identical retry neither.
    assert (await alice.post(f"{V3}/keys/device_signing/upload", keys)).code == 200
    assert (await alice.post(f"{V3}/keys/device_signing/upload", keys)).code == 200

    own = (await alice.post(f"{V3}/keys/query", {"device_keys": {alice.user_id: []}})).json
    assert own["master_keys"][alice.user_id] == master
    assert own["self_signing_keys"][alice.user_id] == ssk
    assert own["user_signing_keys"][alice.user_id] == usk
    seen_by_bob = (await bob.post(f"{V3}/keys/query", {"device_keys": {alice.user_id: []}})).json
    assert seen_by_bob["master_keys"][alice.user_id] == master
    assert seen_by_bob["user_signing_keys"] == {}

    # Replacing the master key needs the password.
    master2, master2_key = cross_signing_key(alice.user_id, "master")
    challenge = await alice.post(f"{V3}/keys/device_signing/upload", {"master_key": master2})
    assert challenge.code == 401 and "session" in challenge.json
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": alice.user_id},
        "password": "secret-pw",
        "session": challenge.json["session"],
    }
    done = await alice.post(
        f"{V3}/keys/device_signing/upload", {"master_key": master2, "auth": auth}
    )
    assert done.code == 200, done
    own = (await alice.post(f"{V3}/keys/query", {"device_keys": {alice.user_id: []}})).json
    assert own["master_keys"][alice.user_id] == master2
    # Back to the first master key for the rest of the test.
    auth.pop("session")
    restored = await alice.post(
        f"{V3}/keys/device_signing/upload", {"master_key": master, "auth": auth}
    )
    assert restored.code == 200, restored

    # Alice signs her device with her self-signing key; a forged signature fails.
    device_obj = signed(dev.device_keys(), alice.user_id, ssk_key)
    forged = forge(dev.device_keys(), alice.user_id, usk_key, ssk_key)
    resp = await alice.post(
        f"{V3}/keys/signatures/upload", {alice.user_id: {alice.device_id: forged}}
    )
    assert resp.json["failures"][alice.user_id][alice.device_id]["errcode"] == "M_INVALID_SIGNATURE"
    resp = await alice.post(
        f"{V3}/keys/signatures/upload", {alice.user_id: {alice.device_id: device_obj}}
    )
    assert resp.code == 200 and resp.json["failures"] == {}, resp
    seen = (await bob.post(f"{V3}/keys/query", {"device_keys": {alice.user_id: []}})).json
    sigs = seen["device_keys"][alice.user_id][alice.device_id]["signatures"][alice.user_id]
    assert (
        sigs[f"ed25519:{ssk_key.version}"]
        == device_obj["signatures"][alice.user_id][f"ed25519:{ssk_key.version}"]
    )

    # Alice signs bob's master key with her user-signing key: only she sees it.
    bob_master, bob_master_key = cross_signing_key(bob.user_id, "master")
    assert (
        await bob.post(f"{V3}/keys/device_signing/upload", {"master_key": bob_master})
    ).code == 200
    pub = bob_master_key.version
    resp = await alice.post(
        f"{V3}/keys/signatures/upload",
        {
            bob.user_id: {pub: signed(bob_master, alice.user_id, usk_key)},
            "@x:remote.example": {"K": {"user_id": "@x:remote.example"}},
        },
    )
    assert set(resp.json["failures"]) == {"@x:remote.example"}, resp
    by_alice = (await alice.post(f"{V3}/keys/query", {"device_keys": {bob.user_id: []}})).json
    assert (
        f"ed25519:{usk_key.version}"
        in by_alice["master_keys"][bob.user_id]["signatures"][alice.user_id]
    )
    carol = await anon.register("carol")
    by_carol = (await carol.post(f"{V3}/keys/query", {"device_keys": {bob.user_id: []}})).json
    assert alice.user_id not in by_carol["master_keys"][bob.user_id].get("signatures", {})
