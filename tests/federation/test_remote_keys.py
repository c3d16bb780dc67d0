"""Client /keys/query and /keys/claim for users of another server: forwarded
over federation (/user/keys/query, /user/keys/claim), all servers at once,
unreachable or silent servers listed in ``failures`` within the timeout, and
nothing accepted that a server says about users it does not own."""

from __future__ import annotations

import time

import pytest_twisted
from twisted.internet import protocol, reactor

from atrium.federation.client import HttpResponseError
from atrium.handlers.e2e_keys_remote import RemoteE2eKeys
from tests.federation.support import CLIENT_V3, free_port
from tests.support.e2ee import TestDevice, cross_signing_key, signed, upload


async def _bob_with_keys(b):
    bob = await b.anon.register("bob")
    device = TestDevice(bob.user_id, bob.device_id)
    await upload(
        bob,
        {
            "device_keys": device.device_keys(),
            "one_time_keys": device.one_time_keys(["k1", "k2"]),
            "fallback_keys": device.one_time_keys(["fb"], fallback=True),
        },
    )
    master, master_key = cross_signing_key(bob.user_id, "master")
    ssk = signed(cross_signing_key(bob.user_id, "self_signing")[0], bob.user_id, master_key)
    usk = signed(cross_signing_key(bob.user_id, "user_signing")[0], bob.user_id, master_key)
    uploaded = await bob.post(
        f"{CLIENT_V3}/keys/device_signing/upload",
        {"master_key": master, "self_signing_key": ssk, "user_signing_key": usk},
    )
    assert uploaded.code == 200, uploaded
    return bob, device, master, ssk


def _without_unsigned(by_device):
    return {d: {k: v for k, v in keys.items() if k != "unsigned"} for d, keys in by_device.items()}


@pytest_twisted.ensureDeferred
async def test_remote_keys_are_queried_and_claimed_without_a_shared_room(two_servers):
    a, b = two_servers
    alice = await a.anon.register("alice")
    carol = await a.anon.register("carol")
    bob, device, master, ssk = await _bob_with_keys(b)

    query = await alice.post(
        f"{CLIENT_V3}/keys/query", {"device_keys": {bob.user_id: [], carol.user_id: []}}
    )
    assert query.code == 200, query
    body = query.json
    assert body["failures"] == {}
    assert _without_unsigned(body["device_keys"][bob.user_id]) == {
        bob.device_id: device.device_keys()
    }
    assert carol.user_id in body["device_keys"]  # the local user in the same request
    assert body["master_keys"][bob.user_id]["keys"] == master["keys"]
    assert body["self_signing_keys"][bob.user_id] == ssk
    # Someone else's user-signing key never leaves their server.
    assert bob.user_id not in body["user_signing_keys"]

    # Asking for one device ID only returns that one (or none).
    only = await alice.post(f"{CLIENT_V3}/keys/query", {"device_keys": {bob.user_id: ["NOPE"]}})
    assert only.json["device_keys"] == {bob.user_id: {}}

    claimed = []
    for _ in range(3):
        claim = await alice.post(
            f"{CLIENT_V3}/keys/claim",
            {"one_time_keys": {bob.user_id: {bob.device_id: "signed_curve25519"}}},
        )
        assert claim.code == 200 and claim.json["failures"] == {}, claim
        (key_id,) = claim.json["one_time_keys"][bob.user_id][bob.device_id]
        claimed.append(key_id)
    # Two one-time keys, each given out once, then the fallback key.
    assert sorted(claimed[:2]) == ["signed_curve25519:k1", "signed_curve25519:k2"]
    assert claimed[2] == "signed_curve25519:fb"


class _Silent(protocol.Protocol):
    """Accepts a connection and never answers."""


@pytest_twisted.ensureDeferred
async def test_unreachable_and_silent_servers_are_failures_within_the_timeout(two_servers):
    a, b = two_servers
    alice = await a.anon.register("alice")
    bob, device, _, _ = await _bob_with_keys(b)
    refused = f"localhost:{free_port()}"
    factory = protocol.Factory.forProtocol(_Silent)
    silent_port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    silent = f"localhost:{silent_port.getHost().port}"
    try:
        started = time.monotonic()
        query = await alice.post(
            f"{CLIENT_V3}/keys/query",
            {
                "device_keys": {bob.user_id: [], f"@x:{refused}": [], f"@y:{silent}": []},
                "timeout": 1500,
            },
        )
        elapsed = time.monotonic() - started
        assert query.code == 200, query
        assert set(query.json["failures"]) == {refused, silent}
        assert query.json["failures"][silent]["status"] == 503
        assert _without_unsigned(query.json["device_keys"][bob.user_id]) == {
            bob.device_id: device.device_keys()
        }
        # The servers were asked at once: one timeout, not one per server.
        assert elapsed < 4.0, elapsed

        claim = await alice.post(
            f"{CLIENT_V3}/keys/claim",
            {"one_time_keys": {f"@y:{silent}": {"D": "signed_curve25519"}}, "timeout": 500},
        )
        assert claim.code == 200 and set(claim.json["failures"]) == {silent}, claim
        assert claim.json["one_time_keys"] == {}
    finally:
        await silent_port.stopListening()


class _FakeClient:
    """Canned federation answers per destination (an exception is raised)."""

    def __init__(self, answers):
        self.answers = answers
        self.requests = []

    async def post_json(self, destination, path, content, timeout):
        self.requests.append((destination, path, content))
        answer = self.answers[destination]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest_twisted.ensureDeferred
async def test_answers_about_other_servers_users_or_devices_are_dropped():
    bob, eve = "@bob:b.example", "@eve:c.example"
    good = {"user_id": bob, "device_id": "D1", "keys": {}}
    client = _FakeClient(
        {
            "b.example": {
                "device_keys": {
                    bob: {
                        "D1": good,
                        "D2": {"user_id": bob, "device_id": "OTHER"},
                        "D3": {"user_id": eve, "device_id": "D3"},
                    },
                    eve: {"E1": {"user_id": eve, "device_id": "E1"}},
                },
                "master_keys": {bob: {"user_id": eve}, eve: {"user_id": eve}},
                "self_signing_keys": {bob: {"user_id": bob, "usage": ["self_signing"]}},
            },
            "c.example": HttpResponseError(403, {"errcode": "M_FORBIDDEN", "error": "no"}),
        }
    )
    remote = RemoteE2eKeys(client)
    found, failures = await remote.query({bob: [], eve: []}, 1.0)
    assert found["device_keys"] == {bob: {"D1": good}}
    assert found["master_keys"] == {}
    assert found["self_signing_keys"] == {bob: {"user_id": bob, "usage": ["self_signing"]}}
    assert failures == {"c.example": {"status": 403, "message": "HTTP 403: no"}}
    # Each server was asked about its own users only.
    asked = {d: c["device_keys"] for d, _, c in client.requests}
    assert asked == {"b.example": {bob: []}, "c.example": {eve: []}}

    client.answers["b.example"] = {
        "one_time_keys": {
            bob: {"D1": {"signed_curve25519:a": {}}, "NOT_ASKED": {"x": {}}},
            eve: {"E1": {"signed_curve25519:b": {}}},
        }
    }
    claimed, failures = await remote.claim({bob: {"D1": "signed_curve25519"}}, 1.0)
    assert claimed == {bob: {"D1": {"signed_curve25519:a": {}}}}
    assert failures == {}
