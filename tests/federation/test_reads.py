"""Federation reads (/event, /state, /state_ids, /event_auth, /backfill,
/get_missing_events) with their access control, and the queries
(/query/profile, /query/directory, /user/devices, /user/keys/*)."""

from __future__ import annotations

import pytest
import pytest_twisted

from atrium.federation.client import HttpResponseError
from tests.federation.support import CLIENT_V3, FED_V1, join_remote_room
from tests.support.client import q


@pytest_twisted.ensureDeferred
async def test_room_reads_need_the_server_in_the_room(two_servers):
    a, b = two_servers
    alice = await a.anon.register("alice")
    room_id = (await alice.post(f"{CLIENT_V3}/createRoom", {"preset": "public_chat"})).json[
        "room_id"
    ]
    tip = sorted(await a.hs.stores.events.get_latest_event_ids_in_room(room_id))[0]
    client = b.hs.federation.client
    for path, args in (
        (f"/state_ids/{q(room_id)}", {"event_id": tip}),
        (f"/state/{q(room_id)}", {"event_id": tip}),
        (f"/event_auth/{q(room_id)}/{q(tip)}", None),
        (f"/backfill/{q(room_id)}", {"v": tip, "limit": 5}),
        (f"/event/{q(tip)}", None),
    ):
        with pytest.raises(HttpResponseError) as info:
            await client.get_json(a.name, FED_V1 + path, args=args)
        assert info.value.code == 403, path

    # A world-readable room can be read by anyone.
    assert (
        await alice.put(
            f"{CLIENT_V3}/rooms/{q(room_id)}/state/m.room.history_visibility",
            {"history_visibility": "world_readable"},
        )
    ).code == 200
    tip = sorted(await a.hs.stores.events.get_latest_event_ids_in_room(room_id))[0]
    answer = await client.get_json(a.name, f"{FED_V1}/event/{q(tip)}")
    assert [p["type"] for p in answer["pdus"]] == ["m.room.history_visibility"]
    state = await client.get_json(
        a.name, f"{FED_V1}/state_ids/{q(room_id)}", args={"event_id": tip}
    )
    assert state["pdu_ids"]


@pytest_twisted.ensureDeferred
async def test_state_auth_chain_and_history_reads(joined_room):
    a, b, alice, bob, room_id = joined_room
    for i in range(3):
        await alice.put(
            f"{CLIENT_V3}/rooms/{q(room_id)}/send/m.room.message/r{i}",
            {"msgtype": "m.text", "body": f"r{i}"},
        )
    client = b.hs.federation.client
    stores = a.hs.stores
    tip = sorted(await stores.events.get_latest_event_ids_in_room(room_id))[0]
    current = await stores.members.get_current_state_ids(room_id)

    ids = await client.get_json(a.name, f"{FED_V1}/state_ids/{q(room_id)}", args={"event_id": tip})
    # The tip is a message: the state before it is the current state.
    assert sorted(ids["pdu_ids"]) == sorted(current.values())
    assert current[("m.room.create", "")] in ids["auth_chain_ids"]

    full = await client.get_json(a.name, f"{FED_V1}/state/{q(room_id)}", args={"event_id": tip})
    assert {(p["type"], p["state_key"]) for p in full["pdus"]} == set(current)
    assert {p["type"] for p in full["auth_chain"]} >= {"m.room.create", "m.room.power_levels"}

    auth = await client.get_json(a.name, f"{FED_V1}/event_auth/{q(room_id)}/{q(tip)}")
    assert {p["type"] for p in auth["auth_chain"]} >= {"m.room.create", "m.room.member"}

    back = await client.get_json(
        a.name, f"{FED_V1}/backfill/{q(room_id)}", args={"v": tip, "limit": 3}
    )
    bodies = [p["content"].get("body") for p in back["pdus"]]
    assert bodies == ["r2", "r1", "r0"]
    assert back["origin"] == a.name

    first = (await stores.events.get_event(tip)).prev_event_ids()
    missing = await client.post_json(
        a.name,
        f"{FED_V1}/get_missing_events/{q(room_id)}",
        {"earliest_events": first, "latest_events": [tip], "limit": 10},
    )
    assert [p["content"].get("body") for p in missing["events"]] == []
    older = await client.post_json(
        a.name,
        f"{FED_V1}/get_missing_events/{q(room_id)}",
        {"earliest_events": [], "latest_events": [tip], "limit": 2},
    )
    assert [p["content"].get("body") for p in older["events"]] == ["r0", "r1"]
    # An unknown event is a 404, not an error page.
    with pytest.raises(HttpResponseError) as info:
        await client.get_json(
            a.name, f"{FED_V1}/state_ids/{q(room_id)}", args={"event_id": "$nope"}
        )
    assert info.value.code == 404


@pytest_twisted.ensureDeferred
async def test_queries_about_local_users_and_aliases(joined_room):
    a, b, alice, bob, room_id = joined_room
    client = b.hs.federation.client
    await alice.put(f"{CLIENT_V3}/profile/{q(alice.user_id)}/displayname", {"displayname": "Alice"})
    profile = await client.get_json(
        a.name, f"{FED_V1}/query/profile", args={"user_id": alice.user_id}
    )
    assert profile == {"displayname": "Alice"}
    only = await client.get_json(
        a.name, f"{FED_V1}/query/profile", args={"user_id": alice.user_id, "field": "avatar_url"}
    )
    assert only == {}
    with pytest.raises(HttpResponseError) as info:
        await client.get_json(a.name, f"{FED_V1}/query/profile", args={"user_id": bob.user_id})
    assert info.value.code == 400

    alias = f"#hall:{a.name}"
    assert (
        await alice.put(f"{CLIENT_V3}/directory/room/{q(alias)}", {"room_id": room_id})
    ).code == 200
    found = await client.get_json(a.name, f"{FED_V1}/query/directory", args={"room_alias": alias})
    assert found == {"room_id": room_id, "servers": [a.name, b.name]}

    device_keys = {
        "user_id": alice.user_id,
        "device_id": alice.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": {f"curve25519:{alice.device_id}": "curvekey"},
        "signatures": {alice.user_id: {f"ed25519:{alice.device_id}": "sig"}},
    }
    upload = await alice.post(
        f"{CLIENT_V3}/keys/upload",
        {"device_keys": device_keys, "one_time_keys": {"signed_curve25519:AAA": {"key": "otk"}}},
    )
    assert upload.code == 200, upload
    devices = await client.get_json(a.name, f"{FED_V1}/user/devices/{q(alice.user_id)}")
    assert devices["user_id"] == alice.user_id and devices["stream_id"] > 0
    (device,) = devices["devices"]
    assert device["device_id"] == alice.device_id
    assert device["keys"]["keys"] == device_keys["keys"]

    keys = await client.post_json(
        a.name,
        f"{FED_V1}/user/keys/query",
        {"device_keys": {alice.user_id: [], bob.user_id: []}},
    )
    assert list(keys["device_keys"]) == [alice.user_id]
    claimed = await client.post_json(
        a.name,
        f"{FED_V1}/user/keys/claim",
        {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}},
    )
    assert claimed["one_time_keys"][alice.user_id][alice.device_id] == {
        "signed_curve25519:AAA": {"key": "otk"}
    }


@pytest_twisted.ensureDeferred
async def test_join_helper_gives_both_servers_the_same_room_state(two_servers):
    """The building blocks a send_join will use: state taken from the
    resident server, stored as outliers, then the join on top of it."""
    a, b = two_servers
    alice = await a.anon.register("alice")
    bob = await b.anon.register("bob")
    room_id = (await alice.post(f"{CLIENT_V3}/createRoom", {"preset": "public_chat"})).json[
        "room_id"
    ]
    join = await join_remote_room(a, b, room_id, bob.user_id)
    state_a = await a.hs.stores.members.get_current_state_ids(room_id)
    state_b = await b.hs.stores.members.get_current_state_ids(room_id)
    assert dict(state_a) == dict(state_b)
    assert state_b[("m.room.member", bob.user_id)] == join.event_id
    create = await b.hs.stores.events.get_event(state_b[("m.room.create", "")])
    assert create.internal_metadata.outlier
    rooms = await bob.get(f"{CLIENT_V3}/joined_rooms")
    assert rooms.json["joined_rooms"] == [room_id]
