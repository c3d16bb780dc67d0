"""Room state and members over HTTP: /state, /state/{type}/{key}, /members
(at, membership, not_membership), /joined_members, /joined_rooms, /event,
/timestamp_to_event."""

from __future__ import annotations

import pytest_twisted

from tests.api.test_room_read import make_room, messages, send
from tests.support.client import q

V3 = "/_matrix/client/v3"


@pytest_twisted.ensureDeferred
async def test_state_reads_return_current_state_and_404_when_absent(server):
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await make_room(alice, name="Hall", topic="chat")
    room = f"{V3}/rooms/{q(room_id)}"

    full = await alice.get(f"{room}/state")
    assert full.code == 200
    keys = {(e["type"], e["state_key"]) for e in full.json}
    assert {("m.room.create", ""), ("m.room.name", ""), ("m.room.member", alice.user_id)} <= keys
    current = await hs.stores.members.get_current_state_ids(room_id)
    assert keys == set(current)
    assert {e["event_id"] for e in full.json} == set(current.values())

    for path in (f"{room}/state/m.room.name", f"{room}/state/m.room.name/"):
        resp = await alice.get(path)
        assert resp.code == 200 and resp.json == {"name": "Hall"}, path
    as_event = await alice.get(f"{room}/state/m.room.name", query={"format": "event"})
    assert as_event.json["type"] == "m.room.name" and as_event.json["content"] == {"name": "Hall"}
    member = await alice.get(f"{room}/state/m.room.member/{q(alice.user_id)}")
    assert member.code == 200 and member.json["membership"] == "join"

    # A custom type with a key, then its absence under another key.
    assert (await alice.put(f"{room}/state/org.example.thing/k1", {"v": 1})).code == 200
    assert (await alice.get(f"{room}/state/org.example.thing/k1")).json == {"v": 1}
    for path in (
        f"{room}/state/org.example.thing/k2",
        f"{room}/state/org.example.thing",
        f"{room}/state/m.room.avatar",
    ):
        missing = await alice.get(path)
        assert missing.code == 404 and missing.json["errcode"] == "M_NOT_FOUND", path
    bad_format = await alice.get(f"{room}/state/m.room.name", query={"format": "xml"})
    assert bad_format.code == 400


@pytest_twisted.ensureDeferred
async def test_members_filters_and_at_token(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    carol = await anon.register("carol")
    dave = await anon.register("dave")
    room_id = await make_room(alice)
    room = f"{V3}/rooms/{q(room_id)}"
    assert (await bob.post(f"{room}/join")).code == 200
    before_carol = (await messages(alice, room_id, dir="b", limit=1)).json["start"]
    sync_token = hs.current_token().to_string()
    assert (await carol.post(f"{room}/join")).code == 200
    assert (await alice.post(f"{room}/invite", {"user_id": dave.user_id})).code == 200
    assert (await bob.post(f"{room}/leave")).code == 200

    def summary(resp):
        assert resp.code == 200, resp
        assert all(e["type"] == "m.room.member" for e in resp.json["chunk"])
        return {e["state_key"]: e["content"]["membership"] for e in resp.json["chunk"]}

    everyone = summary(await alice.get(f"{room}/members"))
    assert everyone == {
        alice.user_id: "join",
        bob.user_id: "leave",
        carol.user_id: "join",
        dave.user_id: "invite",
    }
    joined = summary(await alice.get(f"{room}/members", query={"membership": "join"}))
    assert joined == {alice.user_id: "join", carol.user_id: "join"}
    not_joined = summary(await alice.get(f"{room}/members", query={"not_membership": "join"}))
    assert not_joined == {bob.user_id: "leave", dave.user_id: "invite"}
    both = summary(
        await alice.get(f"{room}/members", query={"membership": "invite", "not_membership": "join"})
    )
    assert both == {dave.user_id: "invite"}

    # `at` a pagination token or a /sync token: membership as it was then.
    for token in (before_carol, sync_token):
        then = summary(await alice.get(f"{room}/members", query={"at": token}))
        assert then == {alice.user_id: "join", bob.user_id: "join"}, token

    # Bob left: he sees members as of his leave, whatever `at` says.
    bobs_view = summary(await bob.get(f"{room}/members"))
    assert bobs_view[bob.user_id] == "leave" and bobs_view[carol.user_id] == "join"
    assert (await alice.post(f"{room}/kick", {"user_id": carol.user_id})).code == 200
    assert summary(await bob.get(f"{room}/members"))[carol.user_id] == "join"
    later = hs.current_token().to_string()
    assert summary(await bob.get(f"{room}/members", query={"at": later}))[carol.user_id] == "join"
    assert summary(await alice.get(f"{room}/members"))[carol.user_id] == "leave"


@pytest_twisted.ensureDeferred
async def test_joined_members_carry_profiles_and_joined_rooms_lists_rooms(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    room_id = await make_room(alice)
    second = await make_room(alice)
    room = f"{V3}/rooms/{q(room_id)}"
    assert (await bob.post(f"{room}/join")).code == 200
    # Bob changes his name in the room: the newest member event wins.
    assert (
        await bob.put(
            f"{room}/state/m.room.member/{q(bob.user_id)}",
            {"membership": "join", "displayname": "Bobby", "avatar_url": "mxc://test.local/b"},
        )
    ).code == 200

    resp = await alice.get(f"{room}/joined_members")
    assert resp.code == 200
    joined = resp.json["joined"]
    assert set(joined) == {alice.user_id, bob.user_id}
    assert joined[bob.user_id] == {"display_name": "Bobby", "avatar_url": "mxc://test.local/b"}

    rooms = await alice.get(f"{V3}/joined_rooms")
    assert rooms.code == 200 and set(rooms.json["joined_rooms"]) == {room_id, second}
    assert (await bob.get(f"{V3}/joined_rooms")).json["joined_rooms"] == [room_id]
    assert (await bob.post(f"{room}/leave")).code == 200
    assert (await bob.get(f"{V3}/joined_rooms")).json["joined_rooms"] == []
    assert set((await alice.get(f"{room}/joined_members")).json["joined"]) == {alice.user_id}
    # Departed: no joined_members any more.
    assert (await bob.get(f"{room}/joined_members")).code == 403


@pytest_twisted.ensureDeferred
async def test_get_event_serializes_for_the_client(server):
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await make_room(alice)
    event_id = await send(alice, room_id, "hello")
    resp = await alice.get(f"{V3}/rooms/{q(room_id)}/event/{q(event_id)}")
    assert resp.code == 200
    body = resp.json
    assert body["event_id"] == event_id and body["content"]["body"] == "hello"
    assert body["sender"] == alice.user_id and body["room_id"] == room_id
    assert "prev_events" not in body and "signatures" not in body
    assert body["unsigned"]["transaction_id"] == "hello"


@pytest_twisted.ensureDeferred
async def test_timestamp_to_event_finds_nearest_visible_event(server):
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await make_room(alice)
    first = await send(alice, room_id, "first")
    first_ts = (await hs.stores.events.get_event(first)).origin_server_ts
    path = f"/_matrix/client/v1/rooms/{q(room_id)}/timestamp_to_event"

    forward = await alice.get(path, query={"ts": first_ts, "dir": "f"})
    assert forward.code == 200 and forward.json == {"event_id": first, "origin_server_ts": first_ts}
    latest = await alice.get(path, query={"ts": first_ts + 10**9, "dir": "b"})
    assert latest.code == 200 and latest.json["origin_server_ts"] <= first_ts + 10**9
    assert (await alice.get(path, query={"ts": 1, "dir": "b"})).code == 404
    assert (await alice.get(path, query={"ts": first_ts + 10**9, "dir": "f"})).code == 404
    assert (await alice.get(path, query={"ts": "soon", "dir": "f"})).json["errcode"] == (
        "M_INVALID_PARAM"
    )
    assert (await alice.get(path, query={"dir": "f"})).json["errcode"] == "M_MISSING_PARAM"
    huge = await alice.get(path, query={"ts": 10**30, "dir": "f"})
    assert huge.code == 400 and huge.json["errcode"] == "M_INVALID_PARAM"
    assert (await alice.get(path, query={"ts": 5, "dir": "x"})).code == 400
