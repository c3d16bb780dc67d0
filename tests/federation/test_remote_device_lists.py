"""The cache of remote users' device lists, between two real Atrium servers:
a user sharing a room with ours is fetched once with /user/devices, kept
current by m.device_list_update EDUs (added and deleted devices), served to
/keys/query without asking the owning server again, resynced when an
update's prev_id shows a gap, not touched by foreign or malformed EDUs, and
marked stale once no room is shared any more."""

from __future__ import annotations

import pytest_twisted
from prometheus_client import REGISTRY

from tests.federation.support import CLIENT_V3, cut_off, send_transaction, wait_until
from tests.support.client import JsonClient, q
from tests.support.e2ee import TestDevice, upload

USER_DEVICES_ROUTE = "user_devices"  # the servlet's name labels its metrics


def user_devices_requests() -> float:
    """GET /user/devices answers served so far (by any server in this process)."""
    return (
        REGISTRY.get_sample_value(
            "atrium_http_requests_total",
            {"method": "GET", "route": USER_DEVICES_ROUTE, "code": "200"},
        )
        or 0.0
    )


async def login(server, username: str) -> JsonClient:
    done = await server.anon.post(
        f"{CLIENT_V3}/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": username},
            "password": "secret-pw",
        },
        token=False,
    )
    assert done.code == 200, done
    client = JsonClient(server.anon.base_url, done.json["access_token"])
    client.user_id = done.json["user_id"]
    client.device_id = done.json["device_id"]
    return client


async def query_devices(client, user_id: str) -> tuple[dict, dict]:
    """(device_id -> keys without unsigned, failures) of a /keys/query."""
    answer = await client.post(f"{CLIENT_V3}/keys/query", {"device_keys": {user_id: []}})
    assert answer.code == 200, answer
    devices = answer.json["device_keys"].get(user_id, {})
    return (
        {d: {k: v for k, v in keys.items() if k != "unsigned"} for d, keys in devices.items()},
        answer.json["failures"],
    )


async def settled(sender, receiver) -> None:
    """Every device-list poke ``sender`` had for ``receiver`` was delivered."""

    async def no_pending():
        return await sender.hs.federation.store.get_pending_pokes(receiver.name, 10) == []

    await wait_until(no_pending)


async def tracked(server, user_id: str):
    return (await server.hs.remote_device_lists.store.get_tracked([user_id])).get(user_id)


async def cached_with_bobs_keys(joined_room):
    """bob@B uploaded keys and alice@A queried them once: A now tracks bob."""
    a, b, alice, bob, room_id = joined_room
    first = TestDevice(bob.user_id, bob.device_id)
    await upload(bob, {"device_keys": first.device_keys()})
    await settled(b, a)
    before = user_devices_requests()
    devices, failures = await query_devices(alice, bob.user_id)
    assert failures == {} and devices == {bob.device_id: first.device_keys()}
    assert user_devices_requests() == before + 1
    entry = await tracked(a, bob.user_id)
    assert entry is not None and not entry.stale
    return first, entry


@pytest_twisted.ensureDeferred
async def test_device_changes_are_cached_and_served_without_asking_the_owner(joined_room):
    a, b, alice, bob, room_id = joined_room
    first, _ = await cached_with_bobs_keys(joined_room)
    since = (await alice.get(f"{CLIENT_V3}/sync", query={"timeout": "0"})).json["next_batch"]
    # From here on A cannot reach B (B can still reach A): every answer about
    # bob must come from A's cache.
    await cut_off(b)
    requests = user_devices_requests()

    bob2 = await login(b, "bob")
    second = TestDevice(bob.user_id, bob2.device_id)
    await upload(bob2, {"device_keys": second.device_keys()})
    expected = {bob.device_id: first.device_keys(), bob2.device_id: second.device_keys()}

    async def alice_has_both():
        devices, failures = await query_devices(alice, bob.user_id)
        assert failures == {}, failures
        return devices == expected

    await wait_until(alice_has_both)

    async def alice_sees_change():
        sync = await alice.get(f"{CLIENT_V3}/sync", query={"timeout": "0", "since": since})
        return bob.user_id in sync.json.get("device_lists", {}).get("changed", [])

    await wait_until(alice_sees_change)

    # A deleted device (a logout) leaves the cache too.
    assert (await bob2.post(f"{CLIENT_V3}/logout", {})).code == 200

    async def alice_has_first_only():
        devices, failures = await query_devices(alice, bob.user_id)
        assert failures == {}, failures
        return devices == {bob.device_id: first.device_keys()}

    await wait_until(alice_has_first_only)
    assert user_devices_requests() == requests  # nobody asked B


@pytest_twisted.ensureDeferred
async def test_a_gap_in_prev_id_resyncs_the_whole_list(joined_room):
    a, b, alice, bob, room_id = joined_room
    first, entry = await cached_with_bobs_keys(joined_room)
    requests = user_devices_requests()
    # An update following one A never got: A must fetch the list again,
    # which does not have the device the update names.
    ghost = TestDevice(bob.user_id, "GHOST")
    gap = entry.stream_id + 50
    edu = {
        "edu_type": "m.device_list_update",
        "content": {
            "user_id": bob.user_id,
            "device_id": "GHOST",
            "stream_id": gap + 1,
            "prev_id": [gap],
            "keys": ghost.device_keys(),
        },
    }
    await send_transaction(b.hs, a.name, "gap-1", [], [edu])
    assert user_devices_requests() == requests + 1
    after = await tracked(a, bob.user_id)
    assert after.stream_id == gap + 1 and not after.stale
    devices, _ = await query_devices(alice, bob.user_id)
    assert devices == {bob.device_id: first.device_keys()}

    # An update that follows what A holds is applied as it is.
    edu["content"] = dict(edu["content"], stream_id=gap + 2, prev_id=[gap + 1])
    await send_transaction(b.hs, a.name, "gap-2", [], [edu])
    devices, _ = await query_devices(alice, bob.user_id)
    assert devices == {bob.device_id: first.device_keys(), "GHOST": ghost.device_keys()}
    assert user_devices_requests() == requests + 1
    assert (await tracked(a, bob.user_id)).stream_id == gap + 2


@pytest_twisted.ensureDeferred
async def test_foreign_and_malformed_updates_store_nothing(joined_room):
    a, b, alice, bob, room_id = joined_room
    first, entry = await cached_with_bobs_keys(joined_room)
    carol = await a.anon.register("carol")
    ghost = TestDevice(bob.user_id, "GHOST")
    good = {
        "user_id": bob.user_id,
        "device_id": "GHOST",
        "stream_id": entry.stream_id + 1,
        "prev_id": [entry.stream_id],
        "keys": ghost.device_keys(),
    }
    bad_contents = [
        dict(good, user_id=carol.user_id),  # B speaking for a user of A
        dict(good, stream_id="7"),
        dict(good, prev_id=entry.stream_id),
        dict(good, deleted="yes"),
        dict(good, keys=dict(ghost.device_keys(), device_id="OTHER")),
        dict(good, keys=dict(ghost.device_keys(), user_id=carol.user_id)),
        {k: v for k, v in good.items() if k != "stream_id"},
        dict(good, device_id=None),
        "not an object",
    ]
    token = a.hs.device_lists_store.get_device_stream_token()
    edus = [{"edu_type": "m.device_list_update", "content": c} for c in bad_contents]
    edus.append({"edu_type": "m.signing_key_update", "content": {"user_id": carol.user_id}})
    answer = await send_transaction(b.hs, a.name, "bad-1", [], edus)
    assert answer == {"pdus": {}}

    devices, _ = await query_devices(alice, bob.user_id)
    assert devices == {bob.device_id: first.device_keys()}
    assert await tracked(a, bob.user_id) == entry
    assert await tracked(a, carol.user_id) is None
    store = a.hs.device_lists_store
    changed = await store.get_users_whose_devices_changed(token, store.get_device_stream_token())
    assert changed == set()

    # The same update, well formed, is applied (the test can fail).
    await send_transaction(
        b.hs, a.name, "good-1", [], [{"edu_type": "m.device_list_update", "content": good}]
    )
    devices, _ = await query_devices(alice, bob.user_id)
    assert set(devices) == {bob.device_id, "GHOST"}


@pytest_twisted.ensureDeferred
async def test_no_shared_room_means_no_tracking(joined_room):
    a, b, alice, bob, room_id = joined_room
    first, _ = await cached_with_bobs_keys(joined_room)
    left = await alice.post(f"{CLIENT_V3}/rooms/{q(room_id)}/leave", {})
    assert left.code == 200, left

    async def stale():
        return (await tracked(a, bob.user_id)).stale

    await wait_until(stale)
    # Without a shared room bob's keys are asked of B again.
    requests = user_devices_requests()
    devices, failures = await query_devices(alice, bob.user_id)
    assert failures == {} and devices == {bob.device_id: first.device_keys()}
    assert user_devices_requests() == requests
    assert (await tracked(a, bob.user_id)).stale
