"""Knocking over federation between two real Atrium servers (loopback TLS):
a user of B knocks on a room of A through make_knock/send_knock, sees it in
/sync ``knock``, A's users see the knock as a member event, A's invite
reaches B over federation and the knocker joins. Bad knocks (a room whose
join rule is not ``knock``, a room version the knocking server does not
speak, forged or unsigned knock events) are refused with nothing stored."""

from __future__ import annotations

import pytest
import pytest_twisted

from atrium.federation.client import HttpResponseError
from tests.federation.support import CLIENT_V3, FED_V1, build_remote_event, wait_until
from tests.support.client import q

KNOCK_RULE = {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}


async def knockable_room(alice, join_rule: dict | None = KNOCK_RULE, **extra) -> str:
    body = {"preset": "private_chat", "name": "Knock here", **extra}
    if join_rule is not None:
        body["initial_state"] = [join_rule]
    created = await alice.post(f"{CLIENT_V3}/createRoom", body)
    assert created.code == 200, created
    return created.json["room_id"]


async def sync(client) -> dict:
    answer = await client.get(f"{CLIENT_V3}/sync", query={"timeout": "0"})
    assert answer.code == 200, answer
    return answer.json


async def membership_on(server, room_id: str, user_id: str) -> str | None:
    state = await server.hs.stores.members.get_current_state_ids(room_id)
    event_id = state.get(("m.room.member", user_id))
    if event_id is None:
        return None
    return (await server.hs.stores.events.get_event(event_id)).membership


@pytest_twisted.ensureDeferred
async def test_knock_then_invite_then_join(two_servers):
    a, b = two_servers
    alice = await a.anon.register("alice")
    bob = await b.anon.register("bob")
    room_id = await knockable_room(alice)

    knocked = await bob.post(
        f"{CLIENT_V3}/knock/{q(room_id)}", {"reason": "let me in"}, query={"via": a.name}
    )
    assert knocked.code == 200, knocked
    assert knocked.json == {"room_id": room_id}

    # B: the room is under rooms.knock, described by what A sent.
    rooms = (await sync(bob))["rooms"]
    entry = rooms["knock"][room_id]["knock_state"]["events"]
    types = {e["type"] for e in entry}
    assert {"m.room.create", "m.room.join_rules", "m.room.name"} <= types
    assert entry[-1]["type"] == "m.room.member"
    assert entry[-1]["state_key"] == bob.user_id
    assert entry[-1]["content"]["membership"] == "knock"
    assert entry[-1]["content"]["reason"] == "let me in"
    assert room_id not in rooms.get("join", {}) and room_id not in rooms.get("invite", {})

    # A: the knock is a member event of the room, in alice's timeline.
    assert await membership_on(a, room_id, bob.user_id) == "knock"
    timeline = (await sync(alice))["rooms"]["join"][room_id]["timeline"]["events"]
    assert any(
        e["type"] == "m.room.member"
        and e["state_key"] == bob.user_id
        and e["content"]["membership"] == "knock"
        for e in timeline
    )

    # Accepting the knock is an invite, which goes to B over federation.
    invited = await alice.post(f"{CLIENT_V3}/rooms/{q(room_id)}/invite", {"user_id": bob.user_id})
    assert invited.code == 200, invited

    async def bob_is_invited():
        rooms = (await sync(bob))["rooms"]
        return room_id in rooms.get("invite", {}) and room_id not in rooms.get("knock", {})

    await wait_until(bob_is_invited)
    joined = await bob.post(f"{CLIENT_V3}/join/{q(room_id)}", {})
    assert joined.code == 200, joined

    async def a_sees_bob_joined():
        return await membership_on(a, room_id, bob.user_id) == "join"

    await wait_until(a_sees_bob_joined)
    assert room_id in (await sync(bob))["rooms"]["join"]


@pytest_twisted.ensureDeferred
async def test_knock_refused_when_the_join_rule_is_not_knock(sqlite_servers):
    a, b = sqlite_servers
    alice = await a.anon.register("alice")
    bob = await b.anon.register("bob")
    room_id = await knockable_room(alice, join_rule=None)  # private_chat: invite only

    knocked = await bob.post(f"{CLIENT_V3}/knock/{q(room_id)}", {}, query={"via": a.name})
    assert knocked.code == 403, knocked
    assert knocked.json["errcode"] == "M_FORBIDDEN"
    assert await membership_on(a, room_id, bob.user_id) is None
    assert await b.hs.stores.rooms.get_room_version_id(room_id) is None
    assert room_id not in (await sync(bob)).get("rooms", {}).get("knock", {})

    # Room versions before 7 have no knocking at all.
    old_room = await knockable_room(alice, join_rule=None, room_version="6")
    with pytest.raises(HttpResponseError) as refused:
        await b.hs.federation.client.get_json(
            a.name,
            f"{FED_V1}/make_knock/{q(old_room)}/{q(bob.user_id)}",
            args={"ver": ["6", "7", "10"]},
        )
    assert refused.value.code == 403


@pytest_twisted.ensureDeferred
async def test_make_knock_needs_a_room_version_the_knocker_speaks(sqlite_servers):
    a, b = sqlite_servers
    alice = await a.anon.register("alice")
    room_id = await knockable_room(alice, room_version="10")
    version_of = await a.hs.stores.rooms.get_room_version_id(room_id)
    bob_id = f"@bob:{b.name}"
    path = f"{FED_V1}/make_knock/{q(room_id)}/{q(bob_id)}"
    for ver in (["6"], None):  # without `ver`: version 1 only
        with pytest.raises(HttpResponseError) as refused:
            await b.hs.federation.client.get_json(a.name, path, args={"ver": ver} if ver else None)
        assert refused.value.code == 400
        assert refused.value.body["errcode"] == "M_INCOMPATIBLE_ROOM_VERSION"
        assert refused.value.body["room_version"] == version_of
    template = await b.hs.federation.client.get_json(a.name, path, args={"ver": ["10"]})
    assert template["room_version"] == "10"
    assert template["event"]["content"]["membership"] == "knock"
    assert template["event"]["sender"] == bob_id


@pytest_twisted.ensureDeferred
async def test_forged_and_unsigned_knocks_are_refused(sqlite_servers):
    a, b = sqlite_servers
    alice = await a.anon.register("alice")
    room_id = await knockable_room(alice)
    bob_id = f"@bob:{b.name}"

    async def send_knock(event_json, event_id):
        with pytest.raises(HttpResponseError) as refused:
            await b.hs.federation.client.put_json(
                a.name, f"{FED_V1}/send_knock/{q(room_id)}/{q(event_id)}", event_json
            )
        return refused.value

    def knock_by(sender, content=None):
        return build_remote_event(
            a.hs,
            b.hs,
            room_id,
            sender,
            "m.room.member",
            content or {"membership": "knock"},
            state_key=sender,
        )

    knock = await knock_by(bob_id)
    unsigned = knock.get_pdu_json()
    unsigned.pop("signatures")
    tampered = knock.get_pdu_json()
    tampered["content"] = {"membership": "knock", "reason": "changed after signing"}
    eve = await knock_by("@eve:elsewhere.example")
    join = await knock_by(bob_id, {"membership": "join"})
    for event_json, event_id in (
        (unsigned, knock.event_id),
        (tampered, knock.event_id),
        (eve.get_pdu_json(), eve.event_id),  # a user of another server
        (join.get_pdu_json(), join.event_id),  # not a knock
        (knock.get_pdu_json(), "$not-its-id"),
    ):
        error = await send_knock(event_json, event_id)
        assert error.code == 400, error.body
        assert error.body["errcode"] == "M_INVALID_PARAM"
    assert await membership_on(a, room_id, bob_id) is None
    assert not await a.hs.stores.events.have_seen_events([knock.event_id, eve.event_id])

    # The genuine knock is accepted (the test can fail).
    answer = await b.hs.federation.client.put_json(
        a.name, f"{FED_V1}/send_knock/{q(room_id)}/{q(knock.event_id)}", knock.get_pdu_json()
    )
    assert {e["type"] for e in answer["knock_room_state"]} >= {"m.room.create"}
    assert await membership_on(a, room_id, bob_id) == "knock"
