"""A room version 12 room over HTTP on one server: createRoom derives the room
ID from the create event, creators are not listed in the power levels (and
cannot be), trusted_private_chat invitees become additional creators, and
sending, state, membership, /sync and /messages work as in other versions."""

from __future__ import annotations

import re

import pytest_twisted

from tests.support.client import q

V3 = "/_matrix/client/v3"
# rooms/v12: "!" + the create event's reference hash, URL-safe unpadded base64.
V12_ROOM_ID = re.compile(r"![A-Za-z0-9_-]{43}")


async def _create_v12(client, **body):
    created = await client.post(f"{V3}/createRoom", {"room_version": "12", **body})
    assert created.code == 200, created
    return created.json["room_id"]


@pytest_twisted.ensureDeferred
async def test_v12_room_id_is_the_create_event_id_and_creator_is_unlisted(server):
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await _create_v12(alice, preset="public_chat", name="Twelve")
    assert V12_ROOM_ID.fullmatch(room_id), room_id

    state = await alice.get(f"{V3}/rooms/{q(room_id)}/state")
    assert state.code == 200, state
    by_type = {(e["type"], e["state_key"]): e for e in state.json}
    create = by_type[("m.room.create", "")]
    # The room ID is the create event's ID with `!` for `$`.
    assert create["event_id"] == "$" + room_id[1:]
    assert create["room_id"] == room_id  # added for clients
    assert create["content"]["room_version"] == "12"
    assert "creator" not in create["content"]
    # The stored PDU has no room_id (rooms/v12 auth rule 1.2).
    stored = await hs.stores.events.get_event(create["event_id"])
    assert "room_id" not in stored.get_pdu_json()
    # Nor is the create event listed among any event's auth_events.
    name = await hs.stores.events.get_event(by_type[("m.room.name", "")]["event_id"])
    assert create["event_id"] not in name.get_pdu_json()["auth_events"]

    power_levels = by_type[("m.room.power_levels", "")]["content"]
    assert alice.user_id not in power_levels["users"]
    # createRoom: tombstones need more than state_default in v12.
    assert power_levels["events"]["m.room.tombstone"] > power_levels["state_default"]

    # Listing a creator in the power levels is refused; other users are fine.
    bob = await anon.register("bob")
    listed = await alice.put(
        f"{V3}/rooms/{q(room_id)}/state/m.room.power_levels",
        {**power_levels, "users": {alice.user_id: 100}},
    )
    assert listed.code == 403 and listed.json["errcode"] == "M_FORBIDDEN", listed
    promoted = await alice.put(
        f"{V3}/rooms/{q(room_id)}/state/m.room.power_levels",
        {**power_levels, "users": {bob.user_id: 100}},
    )
    assert promoted.code == 200, promoted

    # A user at 100 cannot demote or out-rank the creator (infinite level).
    joined = await bob.post(f"{V3}/join/{q(room_id)}")
    assert joined.code == 200, joined
    kick = await bob.post(f"{V3}/rooms/{q(room_id)}/kick", {"user_id": alice.user_id})
    assert kick.code == 403, kick
    grab = await bob.put(
        f"{V3}/rooms/{q(room_id)}/state/m.room.power_levels",
        {**power_levels, "users": {bob.user_id: 100, alice.user_id: 0}},
    )
    assert grab.code == 403, grab


@pytest_twisted.ensureDeferred
async def test_v12_room_messages_sync_and_history(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    room_id = await _create_v12(alice, preset="private_chat")
    invited = await alice.post(f"{V3}/rooms/{q(room_id)}/invite", {"user_id": bob.user_id})
    assert invited.code == 200, invited
    joined = await bob.post(f"{V3}/join/{q(room_id)}")
    assert joined.code == 200 and joined.json["room_id"] == room_id, joined
    for client, body in ((alice, "from alice"), (bob, "from bob")):
        sent = await client.put(
            f"{V3}/rooms/{q(room_id)}/send/m.room.message/t1", {"msgtype": "m.text", "body": body}
        )
        assert sent.code == 200, sent
    topic = await bob.put(f"{V3}/rooms/{q(room_id)}/state/m.room.topic", {"topic": "x"})
    assert topic.code == 403  # bob has 0, state_default is 50

    sync = await bob.get(f"{V3}/sync", query={"timeout": "0"})
    assert sync.code == 200, sync
    room = sync.json["rooms"]["join"][room_id]
    timeline = room["timeline"]["events"]
    assert [e["content"]["body"] for e in timeline if e["type"] == "m.room.message"] == [
        "from alice",
        "from bob",
    ]
    seen_types = {e["type"] for e in room["state"]["events"] + timeline}
    assert {"m.room.create", "m.room.power_levels", "m.room.member"} <= seen_types

    messages = await alice.get(
        f"{V3}/rooms/{q(room_id)}/messages", query={"dir": "b", "limit": "50"}
    )
    assert messages.code == 200, messages
    chunk = messages.json["chunk"]
    assert chunk[-1]["type"] == "m.room.create" and chunk[-1]["room_id"] == room_id
    assert [e["content"]["body"] for e in chunk if e["type"] == "m.room.message"] == [
        "from bob",
        "from alice",
    ]
    members = await alice.get(f"{V3}/rooms/{q(room_id)}/joined_members")
    assert members.code == 200 and set(members.json["joined"]) == {alice.user_id, bob.user_id}

    capabilities = await alice.get(f"{V3}/capabilities")
    versions = capabilities.json["capabilities"]["m.room_versions"]
    assert versions["available"]["12"] == "stable"


@pytest_twisted.ensureDeferred
async def test_v12_additional_creators(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    carol = await anon.register("carol")
    room_id = await _create_v12(
        alice,
        preset="trusted_private_chat",
        invite=[bob.user_id],
        creation_content={"additional_creators": [carol.user_id, bob.user_id]},
    )
    create = await alice.get(f"{V3}/rooms/{q(room_id)}/state/m.room.create")
    assert create.json["additional_creators"] == [carol.user_id, bob.user_id]
    power_levels = await alice.get(f"{V3}/rooms/{q(room_id)}/state/m.room.power_levels")
    assert power_levels.json["users"] == {}
    # bob, an invited additional creator, joins and may change any level.
    assert (await bob.post(f"{V3}/join/{q(room_id)}")).code == 200
    changed = await bob.put(
        f"{V3}/rooms/{q(room_id)}/state/m.room.power_levels",
        {**power_levels.json, "state_default": 90},
    )
    assert changed.code == 200, changed

    bad = await alice.post(
        f"{V3}/createRoom",
        {"room_version": "12", "creation_content": {"additional_creators": ["not-a-user"]}},
    )
    assert bad.code == 400 and bad.json["errcode"] == "M_BAD_JSON", bad


@pytest_twisted.ensureDeferred
async def test_rooms_created_in_the_same_millisecond_are_distinct(server):
    """The same user creating identical rooms within one millisecond must get
    distinct rooms: the room ID is the create event's hash, so create events
    get strictly increasing timestamps (found by bench/load.py: 500 rooms
    created 10 at a time gave 491 room IDs)."""
    hs, anon = server
    alice = await anon.register("alice")
    frozen = hs.clock.time_msec()
    hs.clock.time_msec = lambda: frozen  # every event built in the same millisecond
    try:
        from twisted.internet import defer

        room_ids = await defer.gatherResults(
            [defer.ensureDeferred(_create_v12(alice)) for _ in range(5)]
        )
        room_ids.append(await _create_v12(alice))
    finally:
        del hs.clock.time_msec
    assert len(set(room_ids)) == 6, room_ids
    joined = await alice.get(f"{V3}/joined_rooms")
    assert set(room_ids) <= set(joined.json["joined_rooms"])
