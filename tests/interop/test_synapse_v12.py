"""Room version 12 with a real Synapse: a room made by Synapse's default
createRoom (v12: room ID from the create event, creator unlisted in the power
levels) is joined by an Atrium user, by invite and, for a public room, by
room ID through Synapse; messages and state flow both ways; and Synapse's
user joins a v12 room made by Atrium."""

from __future__ import annotations

import re

import pytest
import pytest_twisted

from tests.federation.support import CLIENT_V3, wait_until
from tests.interop.test_synapse_rooms import (
    accept_invite,
    exchange_messages,
    members_of,
    promote,
    wait_for_state,
)
from tests.support.client import JsonClient, q

pytestmark = pytest.mark.synapse

V12_ROOM_ID = re.compile(r"![A-Za-z0-9_-]{43}")


async def _create_event(client, room_id):
    # /state/m.room.create answers the content only; the full event is in /state.
    state = await client.get(f"{CLIENT_V3}/rooms/{q(room_id)}/state")
    assert state.code == 200, state
    return next(e for e in state.json if e["type"] == "m.room.create")


@pytest_twisted.ensureDeferred
async def test_atrium_user_joins_a_synapse_default_v12_room(synapse, atrium):
    sy = await JsonClient(synapse.client_url).register("sy_v12")
    alice = await atrium.anon.register("alice")
    # No room_version: Synapse's default.
    created = await sy.post(f"{CLIENT_V3}/createRoom", {"preset": "private_chat", "name": "v12"})
    assert created.code == 200, created
    room_id = created.json["room_id"]
    assert V12_ROOM_ID.fullmatch(room_id), f"Synapse's default is not v12: {room_id}"

    invited = await sy.post(f"{CLIENT_V3}/rooms/{q(room_id)}/invite", {"user_id": alice.user_id})
    assert invited.code == 200, invited
    await accept_invite(sy, alice, room_id)

    # Atrium holds the room as Synapse made it: version 12, create event
    # named by the room ID, creator absent from the power levels.
    assert await atrium.hs.stores.rooms.get_room_version_id(room_id) == "12"
    create = await _create_event(alice, room_id)
    assert create["event_id"] == "$" + room_id[1:]
    assert create["content"]["room_version"] == "12"
    levels = await alice.get(f"{CLIENT_V3}/rooms/{q(room_id)}/state/m.room.power_levels")
    assert sy.user_id not in levels.json.get("users", {})

    await exchange_messages(sy, alice, room_id, "v12")

    # Synapse's creator promotes alice; her topic, authorised on Atrium
    # against v12 rules, is accepted by Synapse.
    await promote(sy, alice, room_id, 50)
    topic = await alice.put(f"{CLIENT_V3}/rooms/{q(room_id)}/state/m.room.topic", {"topic": "12"})
    assert topic.code == 200, topic
    await wait_for_state(sy, room_id, "m.room.topic", lambda c: c.get("topic") == "12")
    # alice (50) cannot kick Synapse's creator (infinite), on Atrium's rules.
    kick = await alice.post(f"{CLIENT_V3}/rooms/{q(room_id)}/kick", {"user_id": sy.user_id})
    assert kick.code == 403, kick

    # History from before the join comes from Synapse (backfill) down to
    # the create event.
    history = await alice.get(
        f"{CLIENT_V3}/rooms/{q(room_id)}/messages", query={"dir": "b", "limit": "100"}
    )
    assert history.code == 200, history
    assert "v12 from synapse" in [e["content"].get("body") for e in history.json["chunk"]]


@pytest_twisted.ensureDeferred
async def test_atrium_user_joins_a_public_synapse_v12_room_by_room_id(synapse, atrium):
    sy = await JsonClient(synapse.client_url).register("sy_v12_public")
    alice = await atrium.anon.register("alice")
    created = await sy.post(f"{CLIENT_V3}/createRoom", {"preset": "public_chat"})
    room_id = created.json["room_id"]
    assert V12_ROOM_ID.fullmatch(room_id), room_id
    # A v12 room ID names no server: the client says which one to ask.
    joined = await alice.post(
        f"{CLIENT_V3}/join/{q(room_id)}", {}, query={"via": synapse.server_name}
    )
    assert joined.code == 200, joined
    await exchange_messages(sy, alice, room_id, "public")


@pytest_twisted.ensureDeferred
async def test_synapse_user_joins_an_atrium_v12_room(synapse, atrium):
    sy = await JsonClient(synapse.client_url).register("sy_v12_guest")
    alice = await atrium.anon.register("alice")
    created = await alice.post(
        f"{CLIENT_V3}/createRoom",
        {"room_version": "12", "preset": "public_chat", "name": "Atrium v12"},
    )
    assert created.code == 200, created
    room_id = created.json["room_id"]
    joined = await sy.post(f"{CLIENT_V3}/join/{q(room_id)}", {}, query={"server_name": atrium.name})
    assert joined.code == 200, joined

    async def atrium_sees_sy():
        return sy.user_id in await members_of(alice, room_id)

    await wait_until(atrium_sees_sy, timeout=20.0, interval=0.2)
    # Synapse accepted our create event and derives the same room ID.
    create = await _create_event(sy, room_id)
    assert create["event_id"] == "$" + room_id[1:]
    name = await sy.get(f"{CLIENT_V3}/rooms/{q(room_id)}/state/m.room.name")
    assert name.code == 200 and name.json["name"] == "Atrium v12", name
    await exchange_messages(sy, alice, room_id, "atrium-made")
