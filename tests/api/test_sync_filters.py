"""User filters over HTTP and their effect on /sync; bad /sync parameters."""

from __future__ import annotations

import pytest_twisted

from tests.api.test_sync import V3, bodies, create_room, join, send, sync
from tests.support.client import q


@pytest_twisted.ensureDeferred
async def test_filters_are_stored_per_user(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    flt = {"room": {"timeline": {"limit": 3, "types": ["m.room.*"]}}, "event_format": "client"}
    created = await alice.post(f"{V3}/user/{q(alice.user_id)}/filter", flt)
    assert created.code == 200, created
    filter_id = created.json["filter_id"]
    assert isinstance(filter_id, str) and not filter_id.startswith("{")
    again = await alice.post(f"{V3}/user/{q(alice.user_id)}/filter", flt)
    assert again.json["filter_id"] == filter_id
    other = await alice.post(f"{V3}/user/{q(alice.user_id)}/filter", {"presence": {"limit": 1}})
    assert other.json["filter_id"] != filter_id

    got = await alice.get(f"{V3}/user/{q(alice.user_id)}/filter/{filter_id}")
    assert got.code == 200 and got.json == flt
    # Only your own filters, either way.
    forbidden = await bob.get(f"{V3}/user/{q(alice.user_id)}/filter/{filter_id}")
    assert forbidden.code == 403 and forbidden.json["errcode"] == "M_FORBIDDEN"
    for_other = await bob.post(f"{V3}/user/{q(alice.user_id)}/filter", {})
    assert for_other.code == 403 and for_other.json["errcode"] == "M_FORBIDDEN"
    # Bob has no filter with that ID.
    missing = await bob.get(f"{V3}/user/{q(bob.user_id)}/filter/{filter_id}")
    assert missing.code == 404 and missing.json["errcode"] == "M_NOT_FOUND"
    not_a_number = await alice.get(f"{V3}/user/{q(alice.user_id)}/filter/abc")
    assert not_a_number.code == 404


@pytest_twisted.ensureDeferred
async def test_invalid_filters_are_refused(server):
    hs, anon = server
    alice = await anon.register("alice")
    path = f"{V3}/user/{q(alice.user_id)}/filter"
    for bad in (
        {"room": {"timeline": {"limit": "ten"}}},
        {"room": {"timeline": {"types": "m.room.message"}}},
        {"room": {"rooms": ["not-a-room-id"]}},
        {"presence": {"senders": ["alice"]}},
        {"event_format": "xml"},
        {"room": {"include_leave": "yes"}},
        {"room": {"timeline": {"limit": -1}}},
    ):
        resp = await alice.post(path, bad)
        assert resp.code == 400 and resp.json["errcode"] == "M_BAD_JSON", (bad, resp)
    not_json = await alice.post(path, raw=b"{nope")
    assert not_json.code == 400 and not_json.json["errcode"] == "M_NOT_JSON"
    not_object = await alice.post(path, raw=b"[1]")
    assert not_object.code == 400 and not_object.json["errcode"] == "M_BAD_JSON"


@pytest_twisted.ensureDeferred
async def test_stored_and_inline_filters_apply_to_sync(server):
    hs, anon = server
    alice = await anon.register("alice")
    shown = await create_room(alice, name="shown")
    hidden = await create_room(alice, name="hidden")
    await send(alice, shown, "hello")
    await alice.put(f"{V3}/rooms/{q(shown)}/state/m.room.topic", {"topic": "t"})
    flt = {
        "room": {
            "not_rooms": [hidden],
            "timeline": {"types": ["m.room.message"]},
            "state": {"not_types": ["m.room.power*"]},
        }
    }
    filter_id = (await alice.post(f"{V3}/user/{q(alice.user_id)}/filter", flt)).json["filter_id"]
    for param in (filter_id, flt):
        body = await sync(alice, filter=param)
        assert list(body["rooms"]["join"]) == [shown]
        entry = body["rooms"]["join"][shown]
        assert [e["type"] for e in entry["timeline"]["events"]] == ["m.room.message"]
        state_types = {e["type"] for e in entry["state"]["events"]}
        # State left out of the timeline by the filter arrives as state...
        assert {"m.room.create", "m.room.name", "m.room.member", "m.room.topic"} <= state_types
        # ... except what the state filter excludes (wildcard).
        assert "m.room.power_levels" not in state_types
    senders = await sync(alice, filter={"room": {"timeline": {"not_senders": [alice.user_id]}}})
    assert all(not e["timeline"]["events"] for e in senders["rooms"]["join"].values())
    fields = await sync(alice, filter={"event_fields": ["type", "content.body"]})
    message = [
        e
        for e in fields["rooms"]["join"][shown]["timeline"]["events"]
        if e["type"] == "m.room.message"
    ][0]
    assert message == {"type": "m.room.message", "content": {"body": "hello"}}


@pytest_twisted.ensureDeferred
async def test_timeline_filter_reads_past_filtered_out_events(server):
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await create_room(alice)
    await send(alice, room_id, "wanted-1")
    await send(alice, room_id, "wanted-2")
    for i in range(6):
        assert (
            await alice.put(f"{V3}/rooms/{q(room_id)}/send/org.example.noise/n{i}", {"i": i})
        ).code == 200
    body = await sync(
        alice, filter={"room": {"timeline": {"limit": 2, "types": ["m.room.message"]}}}
    )
    entry = body["rooms"]["join"][room_id]
    assert bodies(entry) == ["wanted-1", "wanted-2"]


@pytest_twisted.ensureDeferred
async def test_bad_sync_parameters_are_matrix_errors(server):
    hs, anon = server
    alice = await anon.register("alice")
    await create_room(alice)
    current = (await sync(alice))["next_batch"]
    ahead = "s999999_0_0_0_0_0_0"
    cases = [
        {"since": "garbage"},
        {"since": "s-5_0"},
        {"since": "sabc"},
        {"since": ahead},
        {"since": "s1_99999999999999999999999"},
        {"since": "s1_2_3_4_5_6_18446744073709551616"},
        {"since": "m1~x.5"},
        {"timeout": "-1"},
        {"timeout": "soon"},
        {"full_state": "maybe"},
        {"set_presence": "busy"},
        {"filter": "12345"},
        {"filter": "not-an-id"},
        {"filter": "{not json"},
        {"filter": '{"room": {"timeline": {"limit": "x"}}}'},
        {"filter": '["list"]'},
    ]
    for params in cases:
        resp = await alice.get(f"{V3}/sync", query=params)
        assert resp.code == 400 and resp.json["errcode"] == "M_INVALID_PARAM", (params, resp)
    ok = await alice.get(
        f"{V3}/sync", query={"since": current, "set_presence": "offline", "timeout": "0"}
    )
    assert ok.code == 200
    assert (await anon.get(f"{V3}/sync")).json["errcode"] == "M_MISSING_TOKEN"


@pytest_twisted.ensureDeferred
async def test_lazy_loading_on_initial_sync_only(server):
    hs, anon = server
    alice = await anon.register("alice")
    others = [await anon.register(f"user{i}") for i in range(7)]
    room_id = await create_room(alice, preset="public_chat")
    for other in others:
        await join(other, room_id)
    talker = others[-1]
    for i in range(3):
        await send(talker, room_id, f"t{i}")
    lazy = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 2}}}
    body = await sync(alice, filter=lazy)
    entry = body["rooms"]["join"][room_id]
    members = {e["state_key"] for e in entry["state"]["events"] if e["type"] == "m.room.member"}
    heroes = set(entry["summary"]["m.heroes"])
    assert len(heroes) == 5 and alice.user_id not in heroes
    # The timeline's sender, the syncing user and the heroes; not everyone.
    assert members == {talker.user_id, alice.user_id} | heroes
    assert len(members) < 8
    assert entry["summary"]["m.joined_member_count"] == 8
    # Without lazy loading, every member is there.
    full = await sync(alice, filter={"room": {"timeline": {"limit": 2}}})
    full_members = {
        e["state_key"]
        for e in full["rooms"]["join"][room_id]["state"]["events"]
        if e["type"] == "m.room.member"
    }
    assert full_members == {alice.user_id} | {o.user_id for o in others}

    # Incremental syncs send ordinary state: a room newly joined with lazy
    # loading asked for still brings every member.
    newcomer = await anon.register("newcomer")
    since = (await sync(newcomer, filter=lazy))["next_batch"]
    await join(newcomer, room_id)
    inc = await sync(newcomer, since=since, filter=lazy)
    entry = inc["rooms"]["join"][room_id]
    members = {
        e["state_key"]
        for e in entry["state"]["events"] + entry["timeline"]["events"]
        if e["type"] == "m.room.member"
    }
    assert members == {alice.user_id, newcomer.user_id} | {o.user_id for o in others}
    # And so does full_state on an incremental sync.
    again = await sync(alice, since=body["next_batch"], filter=lazy, full_state="true")
    state_members = {
        e["state_key"]
        for e in again["rooms"]["join"][room_id]["state"]["events"]
        if e["type"] == "m.room.member"
    }
    assert {o.user_id for o in others} <= state_members
