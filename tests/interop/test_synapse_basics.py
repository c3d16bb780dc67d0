"""Atrium and a real Synapse: what needs no shared room.

Each fetches and checks the other's signing keys (directly and through the
notary endpoint), each answers the other's signed requests (profile
queries both ways) and the unauthenticated /version.
"""

from __future__ import annotations

import pytest
import pytest_twisted

from atrium.federation.keys import parse_server_keys
from tests.federation.support import CLIENT_V3, FED_V1, federating_server
from tests.support.client import JsonClient, q
from tests.support.e2ee import TestDevice, cross_signing_key, signed, upload

pytestmark = pytest.mark.synapse

KEY_SERVER = "/_matrix/key/v2/server"


def synapse_client(synapse) -> JsonClient:
    return JsonClient(synapse.client_url)


@pytest_twisted.ensureDeferred
async def test_version_endpoints_answer_each_other(synapse, atrium):
    client = atrium.hs.federation.client
    theirs = await client.get_json(synapse.server_name, f"{FED_V1}/version", sign=False)
    assert theirs["server"]["name"] == "Synapse", theirs
    # Ours, as any server reaches it: over the TLS federation listener.
    ours = await client.get_json(atrium.name, f"{FED_V1}/version", sign=False)
    assert ours["server"]["name"] == "Atrium" and ours["server"]["version"]


@pytest_twisted.ensureDeferred
async def test_each_server_fetches_and_checks_the_others_keys(synapse, atrium):
    keyring = atrium.hs.federation.keyring
    assert await keyring.fetch_keys(synapse.server_name)
    raw = await atrium.hs.federation.client.get_json(synapse.server_name, KEY_SERVER, sign=False)
    assert raw["verify_keys"]
    stored = await keyring.get_event_keys(synapse.server_name, list(raw["verify_keys"]), None)
    assert set(stored) == set(raw["verify_keys"])

    # Synapse as the notary for Atrium: asked for our key by ID, it fetches
    # our /key/v2/server itself (so it parsed and checked our response) and
    # signs what it returns.
    key_id = f"ed25519:{atrium.hs.signing_key.version}"
    notarised = await atrium.hs.federation.client.post_json(
        synapse.server_name,
        "/_matrix/key/v2/query",
        # Synapse insists on the criterion being present (the spec makes it optional).
        {"server_keys": {atrium.name: {key_id: {"minimum_valid_until_ts": 0}}}},
    )
    (response,) = notarised["server_keys"]
    assert response["server_name"] == atrium.name
    parsed = parse_server_keys(dict(response), atrium.name, atrium.hs.clock.time_msec())
    assert {k.key_id for k in parsed.keys} == {key_id}
    assert synapse.server_name in response["signatures"]


@pytest_twisted.ensureDeferred
async def test_notary_answers_checked_both_ways(synapse, atrium, tmp_path):
    # Atrium asks Synapse, as a trusted notary, about a third server (a second
    # Atrium) it never talked to, and checks the notary's signature. Synapse
    # answers a query for "all keys" from its cache only: asked by key ID, it
    # fetches them.
    async with federating_server(tmp_path, "third") as third:
        keyring = atrium.hs.federation.keyring
        key_id = f"ed25519:{third.hs.signing_key.version}"
        assert await keyring._fetch_from_notary(synapse.server_name, third.name, [key_id])
        assert set(await keyring.get_event_keys(third.name, [key_id], None)) == {key_id}

    # Atrium as the notary for Synapse's keys: the answer carries Synapse's
    # own signature and ours.
    answer = await atrium.hs.federation.client.post_json(
        atrium.name, "/_matrix/key/v2/query", {"server_keys": {synapse.server_name: {}}}
    )
    (response,) = answer["server_keys"]
    parse_server_keys(dict(response), synapse.server_name, atrium.hs.clock.time_msec())
    assert set(response["signatures"]) == {synapse.server_name, atrium.name}


@pytest_twisted.ensureDeferred
async def test_profile_queries_both_ways(synapse, atrium):
    sy = await synapse_client(synapse).register("sy_profile")
    set_name = await sy.put(
        f"{CLIENT_V3}/profile/{q(sy.user_id)}/displayname", {"displayname": "Synapse User"}
    )
    assert set_name.code == 200, set_name
    alice = await atrium.anon.register("alice")
    set_ours = await alice.put(
        f"{CLIENT_V3}/profile/{q(alice.user_id)}/displayname", {"displayname": "Atrium Alice"}
    )
    assert set_ours.code == 200, set_ours

    # Atrium -> Synapse: a signed request Synapse must accept.
    theirs = await atrium.hs.federation.client.get_json(
        synapse.server_name, f"{FED_V1}/query/profile", args={"user_id": sy.user_id}
    )
    assert theirs["displayname"] == "Synapse User"

    # Synapse -> Atrium: Synapse's client API asks us over federation.
    ours = await sy.get(f"{CLIENT_V3}/profile/{q(alice.user_id)}")
    assert ours.code == 200, ours
    assert ours.json["displayname"] == "Atrium Alice"
    unknown = await sy.get(f"{CLIENT_V3}/profile/{q('@nobody:' + atrium.name)}")
    assert unknown.code == 404, unknown


@pytest_twisted.ensureDeferred
async def test_e2e_keys_queried_and_claimed_both_ways(synapse, atrium):
    sy = await synapse_client(synapse).register("sy_keys")
    alice = await atrium.anon.register("alice")
    sy_device = TestDevice(sy.user_id, sy.device_id)
    alice_device = TestDevice(alice.user_id, alice.device_id)
    for client, device in ((sy, sy_device), (alice, alice_device)):
        await upload(
            client,
            {
                "device_keys": device.device_keys(),
                "one_time_keys": device.one_time_keys(["k1"]),
            },
        )
    master, master_key = cross_signing_key(sy.user_id, "master")
    ssk = signed(cross_signing_key(sy.user_id, "self_signing")[0], sy.user_id, master_key)
    uploaded = await sy.post(
        f"{CLIENT_V3}/keys/device_signing/upload", {"master_key": master, "self_signing_key": ssk}
    )
    assert uploaded.code == 200, uploaded

    # Atrium's client asks for the Synapse user's keys (no shared room).
    query = await alice.post(f"{CLIENT_V3}/keys/query", {"device_keys": {sy.user_id: []}})
    assert query.code == 200 and query.json["failures"] == {}, query
    got = query.json["device_keys"][sy.user_id][sy.device_id]
    assert got["keys"] == sy_device.device_keys()["keys"]
    assert got["signatures"][sy.user_id] == sy_device.device_keys()["signatures"][sy.user_id]
    assert query.json["master_keys"][sy.user_id]["keys"] == master["keys"]
    assert query.json["self_signing_keys"][sy.user_id]["keys"] == ssk["keys"]
    claim = await alice.post(
        f"{CLIENT_V3}/keys/claim",
        {"one_time_keys": {sy.user_id: {sy.device_id: "signed_curve25519"}}},
    )
    assert claim.code == 200 and claim.json["failures"] == {}, claim
    assert list(claim.json["one_time_keys"][sy.user_id][sy.device_id]) == ["signed_curve25519:k1"]

    # Synapse's client asks for the Atrium user's keys: Synapse sends us
    # /user/keys/query and /user/keys/claim.
    query = await sy.post(f"{CLIENT_V3}/keys/query", {"device_keys": {alice.user_id: []}})
    assert query.code == 200 and query.json["failures"] == {}, query
    got = query.json["device_keys"][alice.user_id][alice.device_id]
    assert got["keys"] == alice_device.device_keys()["keys"]
    claim = await sy.post(
        f"{CLIENT_V3}/keys/claim",
        {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}},
    )
    assert claim.code == 200 and claim.json["failures"] == {}, claim
    (key,) = claim.json["one_time_keys"][alice.user_id][alice.device_id].values()
    assert key["key"] == f"otk-k1-{alice.device_id}"
