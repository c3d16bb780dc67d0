"""GET /sync over HTTP: initial and incremental syncs, timelines, state and summaries."""

from __future__ import annotations

import json

import pytest_twisted

from tests.support.client import JsonClient, q

V3 = "/_matrix/client/v3"


async def sync(client: JsonClient, **params) -> dict:
    query = {k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in params.items()}
    resp = await client.get(f"{V3}/sync", query=query)
    assert resp.code == 200, resp
    return resp.json


async def send(client: JsonClient, room_id: str, body: str, txn: str | None = None) -> str:
    resp = await client.put(
        f"{V3}/rooms/{q(room_id)}/send/m.room.message/{q(txn or body)}",
        {"msgtype": "m.text", "body": body},
    )
    assert resp.code == 200, resp
    return resp.json["event_id"]


def bodies(entry: dict) -> list[str]:
    return [
        e["content"].get("body")
        for e in entry["timeline"]["events"]
        if e["type"] == "m.room.message"
    ]


@pytest_twisted.ensureDeferred
async def test_initial_sync_shows_created_room_and_messages(server):
    hs, anon = server
    alice = await anon.register("alice")
    room_id = (await alice.post(f"{V3}/createRoom", {"name": "Hall"})).json["room_id"]
    await send(alice, room_id, "one")
    await send(alice, room_id, "two")
    body = await sync(alice)
    assert "next_batch" in body
    entry = body["rooms"]["join"][room_id]
    assert bodies(entry) == ["one", "two"]
    types = [e["type"] for e in entry["timeline"]["events"]]
    assert types[0] == "m.room.create"
    assert entry["timeline"]["limited"] is False
    # The whole room fits in the timeline: nothing precedes it.
    assert entry["state"]["events"] == []
    assert entry["summary"]["m.joined_member_count"] == 1
    assert entry["summary"]["m.heroes"] == []
    assert all("room_id" not in e for e in entry["timeline"]["events"])


async def create_room(client: JsonClient, **body) -> str:
    resp = await client.post(f"{V3}/createRoom", body)
    assert resp.code == 200, resp
    return resp.json["room_id"]


async def join(client: JsonClient, room_id: str) -> None:
    resp = await client.post(f"{V3}/rooms/{q(room_id)}/join")
    assert resp.code == 200, resp


@pytest_twisted.ensureDeferred
async def test_incremental_sync_returns_only_new_events(server):
    hs, anon = server
    alice = await anon.register("alice")
    room_a = await create_room(alice)
    room_b = await create_room(alice)
    await send(alice, room_a, "old")
    first = await sync(alice)
    empty = await sync(alice, since=first["next_batch"])
    assert "rooms" not in empty
    assert empty["next_batch"] == first["next_batch"]
    await send(alice, room_b, "new")
    second = await sync(alice, since=first["next_batch"])
    assert list(second["rooms"]["join"]) == [room_b]
    entry = second["rooms"]["join"][room_b]
    assert bodies(entry) == ["new"]
    assert len(entry["timeline"]["events"]) == 1
    assert entry["timeline"]["limited"] is False
    # Not limited: the client already has everything before, from `since`.
    assert entry["timeline"]["prev_batch"] == first["next_batch"]
    assert entry["state"]["events"] == []
    assert "summary" not in entry or entry["summary"] == {}
    assert second["next_batch"] != first["next_batch"]


@pytest_twisted.ensureDeferred
async def test_transaction_id_only_for_the_sending_device(server):
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await create_room(alice)
    await send(alice, room_id, "hello", txn="txn-1")
    login = await anon.post(
        f"{V3}/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "alice"},
            "password": "secret-pw",
        },
    )
    assert login.code == 200, login
    other_device = JsonClient(anon.base_url, login.json["access_token"])
    mine = [
        e
        for e in (await sync(alice))["rooms"]["join"][room_id]["timeline"]["events"]
        if e["type"] == "m.room.message"
    ]
    theirs = [
        e
        for e in (await sync(other_device))["rooms"]["join"][room_id]["timeline"]["events"]
        if e["type"] == "m.room.message"
    ]
    assert mine[0]["unsigned"]["transaction_id"] == "txn-1"
    assert "transaction_id" not in theirs[0]["unsigned"]


@pytest_twisted.ensureDeferred
async def test_limited_timeline_has_prev_batch_and_state_at_its_start(server):
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await create_room(alice, name="Before")
    for i in range(5):
        await send(alice, room_id, f"m{i}")
    body = await sync(alice, filter={"room": {"timeline": {"limit": 2}}})
    entry = body["rooms"]["join"][room_id]
    assert bodies(entry) == ["m3", "m4"]
    assert entry["timeline"]["limited"] is True
    prev_batch = entry["timeline"]["prev_batch"]
    assert prev_batch.startswith("s")
    from atrium.sync.token import StreamToken

    first_so = None
    event_id = entry["timeline"]["events"][0]["event_id"]
    first_so = (await hs.stores.events.get_event(event_id)).internal_metadata.stream_ordering
    # "Everything at or below this position" ends just before the timeline.
    assert StreamToken.parse(prev_batch).events.stream == first_so - 1
    state_types = {(e["type"], e["state_key"]) for e in entry["state"]["events"]}
    assert ("m.room.create", "") in state_types
    assert ("m.room.name", "") in state_types
    assert ("m.room.member", alice.user_id) in state_types

    # Incremental and limited: the state delta covers the gap only.
    since = body["next_batch"]
    assert (
        await alice.put(f"{V3}/rooms/{q(room_id)}/state/m.room.name", {"name": "After"})
    ).code == 200
    for i in range(3):
        await send(alice, room_id, f"n{i}")
    inc = await sync(alice, since=since, filter={"room": {"timeline": {"limit": 2}}})
    entry = inc["rooms"]["join"][room_id]
    assert bodies(entry) == ["n1", "n2"]
    assert entry["timeline"]["limited"] is True
    names = [e["content"]["name"] for e in entry["state"]["events"] if e["type"] == "m.room.name"]
    assert names == ["After"]
    assert all(e["type"] == "m.room.name" for e in entry["state"]["events"])


@pytest_twisted.ensureDeferred
async def test_invite_then_join_moves_room_from_invite_to_join(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    room_id = await create_room(alice, name="Secret", preset="private_chat")
    since = (await sync(bob))["next_batch"]
    assert (
        await alice.post(f"{V3}/rooms/{q(room_id)}/invite", {"user_id": bob.user_id})
    ).code == 200
    inc = await sync(bob, since=since)
    invite = inc["rooms"]["invite"][room_id]["invite_state"]["events"]
    by_type = {e["type"]: e for e in invite}
    assert by_type["m.room.name"]["content"] == {"name": "Secret"}
    assert "m.room.create" in by_type and "m.room.join_rules" in by_type
    members = {e["state_key"]: e for e in invite if e["type"] == "m.room.member"}
    assert members[bob.user_id]["content"]["membership"] == "invite"
    assert members[alice.user_id]["content"]["membership"] == "join"
    assert all(set(e) == {"type", "state_key", "content", "sender"} for e in invite)
    # An initial sync lists the pending invite too.
    assert room_id in (await sync(bob))["rooms"]["invite"]

    since = inc["next_batch"]
    await join(bob, room_id)
    joined = await sync(bob, since=since)
    assert room_id not in joined["rooms"].get("invite", {})
    entry = joined["rooms"]["join"][room_id]
    # Newly joined: the full state, whatever `since` says.
    timeline_ids = {e["event_id"] for e in entry["timeline"]["events"]}
    state_or_timeline = {
        (e["type"], e["state_key"])
        for e in entry["state"]["events"] + entry["timeline"]["events"]
        if "state_key" in e
    }
    assert ("m.room.create", "") in state_or_timeline
    assert ("m.room.member", bob.user_id) in state_or_timeline
    assert not timeline_ids & {e["event_id"] for e in entry["state"]["events"]}
    assert entry["summary"]["m.joined_member_count"] == 2
    assert entry["summary"]["m.heroes"] == [alice.user_id]


@pytest_twisted.ensureDeferred
async def test_leave_and_kick_show_in_leave_section(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    carol = await anon.register("carol")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await join(carol, room_id)
    await send(alice, room_id, "before")
    bob_since = (await sync(bob))["next_batch"]
    carol_since = (await sync(carol))["next_batch"]

    # Bob leaves by himself.
    assert (await bob.post(f"{V3}/rooms/{q(room_id)}/leave")).code == 200
    await send(alice, room_id, "after-bob")
    left = await sync(bob, since=bob_since)
    assert room_id not in left["rooms"].get("join", {})
    entry = left["rooms"]["leave"][room_id]
    last = entry["timeline"]["events"][-1]
    assert (last["type"], last["state_key"], last["content"]["membership"]) == (
        "m.room.member",
        bob.user_id,
        "leave",
    )
    assert "after-bob" not in bodies(entry)

    # Carol is kicked: she sees the kick, sent by alice.
    assert (
        await alice.post(f"{V3}/rooms/{q(room_id)}/kick", {"user_id": carol.user_id})
    ).code == 200
    kicked = await sync(carol, since=carol_since)
    kick = kicked["rooms"]["leave"][room_id]["timeline"]["events"][-1]
    assert kick["sender"] == alice.user_id and kick["content"]["membership"] == "leave"
    assert "after-bob" in bodies(kicked["rooms"]["leave"][room_id])

    # Initial syncs show left rooms only with include_leave.
    assert room_id not in (await sync(carol)).get("rooms", {}).get("leave", {})
    with_leave = await sync(carol, filter={"room": {"include_leave": True}})
    assert room_id in with_leave["rooms"]["leave"]
    # ... unless forgotten.
    assert (await carol.post(f"{V3}/rooms/{q(room_id)}/forget")).code == 200
    forgot = await sync(carol, filter={"room": {"include_leave": True}})
    assert room_id not in forgot.get("rooms", {}).get("leave", {})


@pytest_twisted.ensureDeferred
async def test_state_event_keyed_by_user_id_is_not_a_member(server):
    """A custom state event whose state_key is a user ID changes neither the
    joined member count nor the member list /sync reports."""
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    room_id = await create_room(
        alice, preset="public_chat", power_level_content_override={"state_default": 0}
    )
    await join(bob, room_id)
    since = (await sync(alice))["next_batch"]
    # Each user may set state keyed by their own ID (auth rules); the
    # content even looks like a membership.
    for client, membership in ((bob, "join"), (alice, "leave")):
        resp = await client.put(
            f"{V3}/rooms/{q(room_id)}/state/org.example.custom/{q(client.user_id)}",
            {"membership": membership},
        )
        assert resp.code == 200, resp
    assert (await bob.post(f"{V3}/rooms/{q(room_id)}/leave")).code == 200

    entry = (await sync(alice))["rooms"]["join"][room_id]
    assert entry["summary"]["m.joined_member_count"] == 1
    assert entry["summary"]["m.invited_member_count"] == 0
    # Nobody else joined or invited: the hero is the member who left.
    assert entry["summary"]["m.heroes"] == [bob.user_id]
    members = {
        e["state_key"]: e["content"]["membership"]
        for e in entry["state"]["events"] + entry["timeline"]["events"]
        if e["type"] == "m.room.member"
    }
    assert members == {alice.user_id: "join", bob.user_id: "leave"}
    assert await hs.stores.members.get_users_in_room(room_id) == {alice.user_id}
    inc = (await sync(alice, since=since))["rooms"]["join"][room_id]
    assert inc["summary"]["m.joined_member_count"] == 1
    bobs = await sync(bob)
    assert room_id not in bobs.get("rooms", {}).get("join", {})


@pytest_twisted.ensureDeferred
async def test_history_visibility_hides_events_before_joining(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    room_id = await create_room(
        alice,
        preset="public_chat",
        initial_state=[
            {
                "type": "m.room.history_visibility",
                "state_key": "",
                "content": {"history_visibility": "joined"},
            }
        ],
    )
    await send(alice, room_id, "before bob")
    await join(bob, room_id)
    await send(alice, room_id, "after bob")
    entry = (await sync(bob))["rooms"]["join"][room_id]
    assert bodies(entry) == ["after bob"]
    # The events before the visibility change were "shared": he sees those.
    timeline_types = [e["type"] for e in entry["timeline"]["events"]]
    assert timeline_types[0] == "m.room.create"
    # The hidden visibility change still reaches him, as state.
    state_types = {e["type"] for e in entry["state"]["events"]}
    assert "m.room.history_visibility" in state_types
    assert "m.room.history_visibility" not in timeline_types
    # Alice sees it all.
    assert bodies((await sync(alice))["rooms"]["join"][room_id]) == ["before bob", "after bob"]


@pytest_twisted.ensureDeferred
async def test_knock_shows_in_knock_section_and_rejected_invite_in_leave(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    room_id = await create_room(
        alice,
        room_version="10",
        name="Knockable",
        initial_state=[
            {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}
        ],
    )
    since = (await sync(bob))["next_batch"]
    assert (await bob.post(f"{V3}/knock/{q(room_id)}", {"reason": "let me in"})).code == 200
    inc = await sync(bob, since=since)
    knock_state = inc["rooms"]["knock"][room_id]["knock_state"]["events"]
    by_type = {e["type"]: e for e in knock_state}
    assert by_type["m.room.name"]["content"] == {"name": "Knockable"}
    assert by_type["m.room.join_rules"]["content"]["join_rule"] == "knock"
    own = [e for e in knock_state if e["type"] == "m.room.member" and e["state_key"] == bob.user_id]
    assert own[0]["content"]["membership"] == "knock"

    # An invite bob rejects: the leave section carries only his own leave.
    other = await create_room(alice, name="Rejected")
    await send(alice, other, "secret")
    assert (await alice.post(f"{V3}/rooms/{q(other)}/invite", {"user_id": bob.user_id})).code == 200
    since = (await sync(bob))["next_batch"]
    assert (await bob.post(f"{V3}/rooms/{q(other)}/leave")).code == 200
    left = (await sync(bob, since=since))["rooms"]["leave"][other]
    assert [(e["type"], e["content"]["membership"]) for e in left["timeline"]["events"]] == [
        ("m.room.member", "leave")
    ]
    assert left["state"]["events"] == []


@pytest_twisted.ensureDeferred
async def test_prev_batch_continues_in_messages(server):
    """/messages accepts a /sync prev_batch as `from` and pages back from the
    event just before the timeline (spec "Syncing": filling the gap)."""
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await create_room(alice)
    for i in range(6):
        await send(alice, room_id, f"m{i}")
    first = await sync(alice, filter={"room": {"timeline": {"limit": 2}}})
    since = first["next_batch"]
    prev = first["rooms"]["join"][room_id]["timeline"]["prev_batch"]
    page = await alice.get(
        f"{V3}/rooms/{q(room_id)}/messages", query={"from": prev, "dir": "b", "limit": "3"}
    )
    assert page.code == 200, page
    assert [e["content"].get("body") for e in page.json["chunk"]] == ["m3", "m2", "m1"]

    # A limited incremental sync: the gap is (since, prev_batch].
    for i in range(6, 10):
        await send(alice, room_id, f"m{i}")
    inc = await sync(alice, since=since, filter={"room": {"timeline": {"limit": 2}}})
    timeline = inc["rooms"]["join"][room_id]["timeline"]
    assert timeline["limited"] is True and bodies(inc["rooms"]["join"][room_id]) == ["m8", "m9"]
    gap = await alice.get(
        f"{V3}/rooms/{q(room_id)}/messages",
        query={"from": timeline["prev_batch"], "to": since, "dir": "b", "limit": "10"},
    )
    assert gap.code == 200, gap
    assert [e["content"].get("body") for e in gap.json["chunk"]] == ["m7", "m6"]
