"""Device-list tracking: who appears in /sync `device_lists` and GET /keys/changes.

Alice and bob share a room; carol comes and goes. Every kind of device
change (new login, rename, new identity keys, deletion, cross-signing keys)
must reach bob; users without a shared room must not; joining and leaving
rooms moves users into `changed` and `left`.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer

from atrium.sync.e2ee import DeviceListsSection
from tests.storage.harness import StatementCounter
from tests.support.client import q
from tests.support.e2ee import (
    V3,
    TestDevice,
    cross_signing_key,
    login,
    run_section,
    section_of,
    signed,
)


async def changes(client, since, now):
    resp = await client.get(
        f"{V3}/keys/changes", query={"from": since.to_string(), "to": now.to_string()}
    )
    assert resp.code == 200, resp
    return set(resp.json["changed"]), set(resp.json["left"])


@pytest_twisted.ensureDeferred
async def test_device_changes_reach_users_sharing_a_room(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    carol = await anon.register("carol")
    room = (await alice.post(f"{V3}/createRoom", {"preset": "public_chat"})).json["room_id"]
    assert (await bob.post(f"{V3}/join/{q(room)}")).code == 200
    section = section_of(hs, DeviceListsSection)

    results = {}

    async def bob_sees(action, name=None):
        before = hs.current_token()
        results[name] = await action
        after = hs.current_token()
        via_api = await changes(bob, before, after)
        response, _ = await run_section(section, bob, before, after)
        lists = response.get("device_lists", {"changed": [], "left": []})
        assert (set(lists["changed"]), set(lists["left"])) == via_api
        return via_api

    dev = TestDevice(alice.user_id, alice.device_id)
    assert await bob_sees(alice.post(f"{V3}/keys/upload", {"device_keys": dev.device_keys()})) == (
        {alice.user_id},
        set(),
    )
    # The same keys again change nothing; one-time keys are not a device change.
    assert await bob_sees(
        alice.post(
            f"{V3}/keys/upload",
            {"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(["A"])},
        )
    ) == (set(), set())
    assert await bob_sees(
        alice.put(f"{V3}/devices/{alice.device_id}", {"display_name": "laptop"})
    ) == ({alice.user_id}, set())
    assert await bob_sees(login(anon, "alice"), "phone") == ({alice.user_id}, set())
    phone = results["phone"]
    master, _ = cross_signing_key(alice.user_id, "master")
    assert await bob_sees(
        alice.post(f"{V3}/keys/device_signing/upload", {"master_key": master})
    ) == ({alice.user_id}, set())
    assert await bob_sees(phone.post(f"{V3}/logout")) == ({alice.user_id}, set())
    # Bob's own device changes are reported to him too.
    assert await bob_sees(bob.put(f"{V3}/devices/{bob.device_id}", {"display_name": "b"})) == (
        {bob.user_id},
        set(),
    )

    # Carol shares no room with bob: her changes stay hidden from him.
    assert await bob_sees(carol.put(f"{V3}/devices/{carol.device_id}", {"display_name": "c"})) == (
        set(),
        set(),
    )
    # Joining the room makes her "changed" for bob, leaving makes her "left".
    assert await bob_sees(carol.post(f"{V3}/join/{q(room)}")) == ({carol.user_id}, set())
    assert await bob_sees(carol.put(f"{V3}/devices/{carol.device_id}", {"display_name": "c2"})) == (
        {carol.user_id},
        set(),
    )
    assert await bob_sees(carol.post(f"{V3}/rooms/{q(room)}/leave")) == (set(), {carol.user_id})

    # When bob himself leaves, everyone he no longer shares a room with is "left".
    assert await bob_sees(bob.post(f"{V3}/rooms/{q(room)}/leave")) == (set(), {alice.user_id})
    # ...and rejoining brings them back as "changed".
    assert await bob_sees(bob.post(f"{V3}/join/{q(room)}")) == ({alice.user_id}, set())

    # Initial syncs carry no device_lists (spec: incremental only).
    response, _ = await run_section(section, bob, None, hs.current_token())
    assert response == {}


@pytest_twisted.ensureDeferred
async def test_device_change_wakes_room_members_long_poll(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    room = (await alice.post(f"{V3}/createRoom", {"preset": "public_chat"})).json["room_id"]
    assert (await bob.post(f"{V3}/join/{q(room)}")).code == 200
    section = section_of(hs, DeviceListsSection)
    since = hs.current_token()

    async def check(token):
        response, _ = await run_section(section, bob, since, token)
        return response

    # Bob waits on his rooms only; alice's change must wake him through them.
    poll = defer.ensureDeferred(
        hs.notifier.wait_for_events(bob.user_id, [room], 10_000, check, lambda r: not r, since)
    )
    started = hs.clock.time()
    await alice.put(f"{V3}/devices/{alice.device_id}", {"display_name": "new"})
    result = await poll
    assert result["device_lists"]["changed"] == [alice.user_id]
    assert hs.clock.time() - started < 5


@pytest_twisted.ensureDeferred
async def test_signing_another_users_key_is_news_for_the_signer_only(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    master, master_key = cross_signing_key(alice.user_id, "master")
    usk, usk_key = cross_signing_key(alice.user_id, "user_signing")
    usk = signed(usk, alice.user_id, master_key)
    bob_master, bob_master_key = cross_signing_key(bob.user_id, "master")
    up = await alice.post(
        f"{V3}/keys/device_signing/upload", {"master_key": master, "user_signing_key": usk}
    )
    assert up.code == 200, up
    assert (
        await bob.post(f"{V3}/keys/device_signing/upload", {"master_key": bob_master})
    ).code == 200
    before = hs.current_token()
    resp = await alice.post(
        f"{V3}/keys/signatures/upload",
        {bob.user_id: {bob_master_key.version: signed(bob_master, alice.user_id, usk_key)}},
    )
    assert resp.json["failures"] == {}, resp
    after = hs.current_token()
    # No shared room, yet alice's devices must re-fetch bob's keys; bob hears nothing.
    assert await changes(alice, before, after) == ({bob.user_id}, set())
    assert await changes(bob, before, after) == (set(), set())


@pytest_twisted.ensureDeferred
async def test_syncs_after_messages_only_skip_the_membership_query(server):
    """The membership gate: messages alone never trigger the membership-delta
    query, while a join (even one the gate saw only as an invalidation) does."""
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    room = (await alice.post(f"{V3}/createRoom", {"preset": "public_chat"})).json["room_id"]
    since = hs.current_token()
    msg = await alice.put(
        f"{V3}/rooms/{q(room)}/send/m.room.message/m1", {"msgtype": "m.text", "body": "x"}
    )
    assert msg.code == 200
    with StatementCounter(hs.db) as counter:
        assert not await hs.devices.get_device_list_changes(
            alice.user_id, since, hs.current_token()
        )
    assert "get_membership_deltas" not in counter.transactions

    assert (await bob.post(f"{V3}/join/{q(room)}")).code == 200
    with StatementCounter(hs.db) as counter:
        found = await hs.devices.get_device_list_changes(alice.user_id, since, hs.current_token())
    assert "get_membership_deltas" in counter.transactions
    assert found.changed == {bob.user_id}
