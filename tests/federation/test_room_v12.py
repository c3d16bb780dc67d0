"""A room version 12 room across two real Atrium servers: the invitee's
server joins with make_join/send_join (the create event is no event's listed
auth event; the room ID names it), messages flow both ways, and a public v12
room is joined by room ID with `via` (the room ID has no server name)."""

from __future__ import annotations

import pytest_twisted

from tests.federation.support import CLIENT_V3, wait_until
from tests.federation.test_membership import send_text, sync_rooms, timeline_bodies
from tests.support.client import q


@pytest_twisted.ensureDeferred
async def test_v12_invite_join_and_messages_both_ways(two_servers):
    a, b = two_servers
    alice = await a.anon.register("alice")
    bob = await b.anon.register("bob")
    created = await alice.post(
        f"{CLIENT_V3}/createRoom",
        {"room_version": "12", "preset": "private_chat", "name": "Twelve"},
    )
    assert created.code == 200, created
    room_id = created.json["room_id"]
    assert ":" not in room_id
    invited = await alice.post(f"{CLIENT_V3}/rooms/{q(room_id)}/invite", {"user_id": bob.user_id})
    assert invited.code == 200, invited

    async def bob_is_invited():
        return (await sync_rooms(bob)).get("rooms", {}).get("invite", {}).get(room_id)

    await wait_until(bob_is_invited)
    joined = await bob.post(f"{CLIENT_V3}/join/{q(room_id)}", {})
    assert joined.code == 200, joined

    async def a_sees_bob_joined():
        return bob.user_id in await a.hs.stores.members.get_users_in_room(room_id)

    await wait_until(a_sees_bob_joined)
    assert await b.hs.stores.rooms.get_room_version_id(room_id) == "12"
    state_a = await a.hs.stores.members.get_current_state_ids(room_id)
    state_b = await b.hs.stores.members.get_current_state_ids(room_id)
    assert state_a == state_b
    create_id = state_b[("m.room.create", "")]
    assert create_id == "$" + room_id[1:]
    join = await b.hs.stores.events.get_event(state_b[("m.room.member", bob.user_id)])
    assert create_id not in join.get_pdu_json()["auth_events"]

    await send_text(alice, room_id, "hello from A", "t1")
    await wait_until(lambda: _sees(bob, room_id, "hello from A"))
    await send_text(bob, room_id, "hello from B", "t1")
    await wait_until(lambda: _sees(alice, room_id, "hello from B"))

    # The creator's infinite power reaches B: bob (raised to 100 by alice)
    # still cannot kick her there.
    power_levels = await alice.get(f"{CLIENT_V3}/rooms/{q(room_id)}/state/m.room.power_levels")
    raised = await alice.put(
        f"{CLIENT_V3}/rooms/{q(room_id)}/state/m.room.power_levels",
        {**power_levels.json, "users": {bob.user_id: 100}},
    )
    assert raised.code == 200, raised

    async def b_has_it():
        current = await b.hs.stores.members.get_current_state_ids(room_id)
        return current.get(("m.room.power_levels", "")) == raised.json["event_id"]

    await wait_until(b_has_it)
    kick = await bob.post(f"{CLIENT_V3}/rooms/{q(room_id)}/kick", {"user_id": alice.user_id})
    assert kick.code == 403, kick


@pytest_twisted.ensureDeferred
async def test_v12_public_room_joined_by_room_id_via_server(sqlite_servers):
    a, b = sqlite_servers
    alice = await a.anon.register("alice")
    bob = await b.anon.register("bob")
    created = await alice.post(
        f"{CLIENT_V3}/createRoom", {"room_version": "12", "preset": "public_chat"}
    )
    room_id = created.json["room_id"]
    # Nothing names a server to ask: v12 room IDs have no domain.
    nowhere = await bob.post(f"{CLIENT_V3}/join/{q(room_id)}", {})
    assert nowhere.code in (403, 404), nowhere
    joined = await bob.post(f"{CLIENT_V3}/join/{q(room_id)}", {}, query={"via": a.name})
    assert joined.code == 200 and joined.json["room_id"] == room_id, joined
    await send_text(bob, room_id, "joined via", "t1")
    await wait_until(lambda: _sees(alice, room_id, "joined via"))


async def _sees(client, room_id, body):
    return body in timeline_bodies(await sync_rooms(client), room_id)
