"""Membership over federation between two real Atrium servers (loopback TLS):
a remote invite reaches the invitee's /sync, the invitee joins with
make_join/send_join through the client API, messages flow both ways, the
leave reaches the resident server, and a rejected remote invite ends the
invite on both sides."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.federation.support import CLIENT_V3, wait_until
from tests.support.client import q


async def sync_rooms(client, since=None):
    query = {"timeout": "0"}
    if since:
        query["since"] = since
    sync = await client.get(f"{CLIENT_V3}/sync", query=query)
    assert sync.code == 200, sync
    return sync.json


def timeline_bodies(sync, room_id):
    room = sync.get("rooms", {}).get("join", {}).get(room_id, {})
    return [
        e["content"].get("body")
        for e in room.get("timeline", {}).get("events", [])
        if e["type"] == "m.room.message"
    ]


async def send_text(client, room_id, body, txn):
    sent = await client.put(
        f"{CLIENT_V3}/rooms/{q(room_id)}/send/m.room.message/{txn}",
        {"msgtype": "m.text", "body": body},
    )
    assert sent.code == 200, sent
    return sent.json["event_id"]


async def invite_and_join(a, b, alice, bob, preset="private_chat", power_levels=None):
    """alice@A creates a room and invites bob@B, who joins over federation."""
    body = {"preset": preset, "name": "Federated room"}
    if power_levels is not None:
        body["power_level_content_override"] = power_levels
    created = await alice.post(f"{CLIENT_V3}/createRoom", body)
    assert created.code == 200, created
    room_id = created.json["room_id"]
    invited = await alice.post(f"{CLIENT_V3}/rooms/{q(room_id)}/invite", {"user_id": bob.user_id})
    assert invited.code == 200, invited

    async def bob_is_invited():
        sync = await sync_rooms(bob)
        return sync.get("rooms", {}).get("invite", {}).get(room_id)

    invite_entry = await wait_until(bob_is_invited)
    stripped = invite_entry["invite_state"]["events"]
    assert any(
        e["type"] == "m.room.name" and e["content"]["name"] == "Federated room" for e in stripped
    )
    assert stripped[-1]["type"] == "m.room.member"
    assert stripped[-1]["content"]["membership"] == "invite"

    joined = await bob.post(f"{CLIENT_V3}/join/{q(room_id)}", {})
    assert joined.code == 200, joined
    assert joined.json["room_id"] == room_id
    return room_id


@pytest_twisted.ensureDeferred
async def test_invite_join_messages_and_leave(two_servers):
    a, b = two_servers
    alice = await a.anon.register("alice")
    bob = await b.anon.register("bob")
    room_id = await invite_and_join(a, b, alice, bob)

    # B believes the room's state: bob and alice joined, the name as A set it.
    assert await b.hs.stores.members.get_users_in_room(room_id) == {alice.user_id, bob.user_id}

    async def a_sees_bob_joined():
        return bob.user_id in await a.hs.stores.members.get_users_in_room(room_id)

    await wait_until(a_sees_bob_joined)
    state_a = await a.hs.stores.members.get_current_state_ids(room_id)
    state_b = await b.hs.stores.members.get_current_state_ids(room_id)
    assert state_a == state_b

    # bob's /sync has the room joined with its state.
    sync = await sync_rooms(bob)
    room = sync["rooms"]["join"][room_id]
    state_types = {e["type"] for e in room["state"]["events"] + room["timeline"]["events"]}
    assert {"m.room.create", "m.room.name", "m.room.member"} <= state_types

    await send_text(alice, room_id, "hello from A", "t1")

    async def bob_sees(body):
        return body in timeline_bodies(await sync_rooms(bob), room_id)

    await wait_until(lambda: bob_sees("hello from A"))
    await send_text(bob, room_id, "hello from B", "t1")

    async def alice_sees(body):
        return body in timeline_bodies(await sync_rooms(alice), room_id)

    await wait_until(lambda: alice_sees("hello from B"))
    # /messages on B serves both.
    messages = await bob.get(
        f"{CLIENT_V3}/rooms/{q(room_id)}/messages", query={"dir": "b", "limit": "50"}
    )
    assert messages.code == 200, messages
    bodies = [e["content"].get("body") for e in messages.json["chunk"]]
    assert "hello from A" in bodies and "hello from B" in bodies

    # bob leaves: A hears of it, and B's server is out of the room.
    left = await bob.post(f"{CLIENT_V3}/rooms/{q(room_id)}/leave", {})
    assert left.code == 200, left

    async def a_sees_bob_left():
        return bob.user_id not in await a.hs.stores.members.get_users_in_room(room_id)

    await wait_until(a_sees_bob_left)
    assert not await b.hs.stores.members.is_host_joined(room_id, b.name)


async def _invite(a, alice, bob, preset="private_chat"):
    created = await alice.post(f"{CLIENT_V3}/createRoom", {"preset": preset})
    assert created.code == 200, created
    room_id = created.json["room_id"]
    invited = await alice.post(f"{CLIENT_V3}/rooms/{q(room_id)}/invite", {"user_id": bob.user_id})
    assert invited.code == 200, invited
    return room_id


async def _membership_on(server, room_id, user_id):
    state = await server.hs.stores.members.get_current_state_ids(room_id)
    event_id = state.get(("m.room.member", user_id))
    if event_id is None:
        return None
    event = await server.hs.stores.events.get_event(event_id)
    return event.membership


@pytest_twisted.ensureDeferred
async def test_rejecting_a_remote_invite_tells_the_inviting_server(sqlite_servers):
    a, b = sqlite_servers
    alice = await a.anon.register("alice")
    bob = await b.anon.register("bob")
    room_id = await _invite(a, alice, bob)
    since = (await sync_rooms(bob))["next_batch"]
    # B holds only the invite: no state, no user of B joined.
    assert not await b.hs.stores.members.is_host_joined(room_id, b.name)

    rejected = await bob.post(f"{CLIENT_V3}/rooms/{q(room_id)}/leave", {"reason": "no thanks"})
    assert rejected.code == 200, rejected
    # make_leave/send_leave went to A, which has bob's leave in the room's state.
    assert await _membership_on(a, room_id, bob.user_id) == "leave"
    sync = await sync_rooms(bob, since)
    assert room_id in sync["rooms"]["leave"]
    assert room_id not in sync["rooms"].get("invite", {})
    local = await b.hs.stores.members.get_local_current_membership_for_user_in_room(
        bob.user_id, room_id
    )
    assert local.membership == "leave"
    leave = await b.hs.stores.events.get_event(local.event_id)
    assert leave.content.get("reason") == "no thanks"
    assert (
        leave.event_id
        == (await a.hs.stores.members.get_current_state_ids(room_id))[
            ("m.room.member", bob.user_id)
        ]
    )


@pytest_twisted.ensureDeferred
async def test_invite_rejected_locally_when_the_inviting_server_is_gone(tmp_path):
    from tests.federation.support import federating_server

    async with federating_server(tmp_path, "b") as b:
        bob = await b.anon.register("bob")
        async with federating_server(tmp_path, "a") as a:
            alice = await a.anon.register("alice")
            room_id = await _invite(a, alice, bob)

            async def invited():
                sync = await sync_rooms(bob)
                return room_id in sync.get("rooms", {}).get("invite", {})

            await wait_until(invited)
        # A is stopped: the rejection cannot reach it, but bob is rid of the invite.
        rejected = await bob.post(f"{CLIENT_V3}/rooms/{q(room_id)}/leave", {})
        assert rejected.code == 200, rejected
        sync = await sync_rooms(bob)
        assert room_id not in sync.get("rooms", {}).get("invite", {})
        local = await b.hs.stores.members.get_local_current_membership_for_user_in_room(
            bob.user_id, room_id
        )
        assert local.membership == "leave"


@pytest_twisted.ensureDeferred
async def test_join_public_room_by_remote_alias_and_via(sqlite_servers):
    a, b = sqlite_servers
    alice = await a.anon.register("alice")
    bob = await b.anon.register("bob")
    carol = await b.anon.register("carol")
    created = await alice.post(
        f"{CLIENT_V3}/createRoom", {"preset": "public_chat", "room_alias_name": "lobby"}
    )
    assert created.code == 200, created
    room_id, alias = created.json["room_id"], created.json["room_alias"]

    # By alias: B asks A's directory (/query/directory), then joins through A.
    joined = await bob.post(f"{CLIENT_V3}/join/{q(alias)}", {})
    assert joined.code == 200, joined
    assert joined.json["room_id"] == room_id
    # A second user of B joins locally: B is in the room now.
    second = await carol.post(f"{CLIENT_V3}/join/{q(room_id)}", {"reason": "hi"})
    assert second.code == 200, second

    async def both_on_a():
        users = await a.hs.stores.members.get_users_in_room(room_id)
        return {bob.user_id, carol.user_id} <= users

    await wait_until(both_on_a)

    # A third room joined by ID with ?via= (v12 room IDs name no server).
    other = await alice.post(f"{CLIENT_V3}/createRoom", {"preset": "public_chat"})
    other_id = other.json["room_id"]
    via = await bob.post(f"{CLIENT_V3}/join/{q(other_id)}", {}, query={"via": a.name})
    assert via.code == 200, via
    assert bob.user_id in await b.hs.stores.members.get_users_in_room(other_id)

    # An alias nobody has: 404 from A's directory.
    missing = await bob.post(f"{CLIENT_V3}/join/{q('#nope:' + a.name)}", {})
    assert missing.code == 404 and missing.json["errcode"] == "M_NOT_FOUND", missing
    # A private room of A that bob is not invited to: A's 403 is passed on.
    private = await alice.post(f"{CLIENT_V3}/createRoom", {"preset": "private_chat"})
    refused = await bob.post(
        f"{CLIENT_V3}/join/{q(private.json['room_id'])}", {}, query={"via": a.name}
    )
    assert refused.code == 403 and refused.json["errcode"] == "M_FORBIDDEN", refused
    assert await b.hs.stores.rooms.get_room_version_id(private.json["room_id"]) is None


@pytest.mark.parametrize("room_version", ["10", "12"])
@pytest_twisted.ensureDeferred
async def test_restricted_join_through_an_allowed_room(sqlite_servers, room_version):
    """rooms/v8+ restricted join: A names alice as the authoriser, countersigns
    bob's join, and B keeps the countersigned event. Inviting needs 50 here:
    in v12 alice, the creator, is not listed but has an infinite level."""
    a, b = sqlite_servers
    alice = await a.anon.register("alice")
    bob = await b.anon.register("bob")
    space = await alice.post(f"{CLIENT_V3}/createRoom", {"preset": "public_chat"})
    space_id = space.json["room_id"]
    restricted = await alice.post(
        f"{CLIENT_V3}/createRoom",
        {
            "preset": "private_chat",
            "room_version": room_version,
            "power_level_content_override": {"invite": 50},
            "initial_state": [
                {
                    "type": "m.room.join_rules",
                    "state_key": "",
                    "content": {
                        "join_rule": "restricted",
                        "allow": [{"type": "m.room_membership", "room_id": space_id}],
                    },
                }
            ],
        },
    )
    assert restricted.code == 200, restricted
    room_id = restricted.json["room_id"]
    # Not in the allowed room yet: A cannot vouch for bob.
    refused = await bob.post(f"{CLIENT_V3}/join/{q(room_id)}", {}, query={"via": a.name})
    assert refused.code == 400 and refused.json["errcode"] == "M_UNABLE_TO_AUTHORISE_JOIN", refused

    joined_space = await bob.post(f"{CLIENT_V3}/join/{q(space_id)}", {}, query={"via": a.name})
    assert joined_space.code == 200, joined_space
    joined = await bob.post(f"{CLIENT_V3}/join/{q(room_id)}", {}, query={"via": a.name})
    assert joined.code == 200, joined
    join_id = (await b.hs.stores.members.get_current_state_ids(room_id))[
        ("m.room.member", bob.user_id)
    ]
    on_b = await b.hs.stores.events.get_event(join_id)
    on_a = await a.hs.stores.events.get_event(join_id)
    assert on_b.content["join_authorised_via_users_server"] == alice.user_id
    for event in (on_a, on_b):
        assert set(event.signatures) == {a.name, b.name}
