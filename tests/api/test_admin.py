"""The admin API: only server admins; users, deactivation, rooms, version."""

from __future__ import annotations

import pytest_twisted

from tests.support.client import JsonClient, q

V3 = "/_matrix/client/v3"
ADMIN = "/_atrium/admin/v1"


async def _admin(hs, anon) -> JsonClient:
    await hs.registration.register_user("root", "pw", admin=True)
    resp = await anon.post(
        f"{V3}/login", {"type": "m.login.password", "user": "root", "password": "pw"}, token=False
    )
    return JsonClient(anon.base_url, resp.json["access_token"])


@pytest_twisted.ensureDeferred
async def test_admin_endpoints_need_an_admin(server):
    hs, anon = server
    alice = await anon.register("alice")
    for path in ("/server_version", "/users", f"/users/{q(alice.user_id)}", "/rooms"):
        assert (await alice.get(ADMIN + path)).json["errcode"] == "M_FORBIDDEN"
        assert (await anon.get(ADMIN + path, token=False)).code == 401


@pytest_twisted.ensureDeferred
async def test_users_rooms_and_deactivation(server):
    hs, anon = server
    root = await _admin(hs, anon)
    alice = await anon.register("alice", "pw-a")
    room_id = (await alice.post(f"{V3}/createRoom", {"name": "Ops"})).json["room_id"]

    assert (await root.get(f"{ADMIN}/server_version")).json["server_version"].startswith("Atrium")
    users = await root.get(f"{ADMIN}/users", query={"limit": 1})
    assert (
        users.json["total"] == 2
        and len(users.json["users"]) == 1
        and users.json["next_token"] == "1"
    )
    page2 = await root.get(f"{ADMIN}/users", query={"from": users.json["next_token"]})
    assert {u["name"] for u in users.json["users"] + page2.json["users"]} == {
        "@root:test.local",
        alice.user_id,
    }
    detail = await root.get(f"{ADMIN}/users/{q(alice.user_id)}")
    assert detail.json["joined_rooms"] == [room_id] and detail.json["devices"] == [alice.device_id]
    assert (await root.get(f"{ADMIN}/users/{q('@ghost:test.local')}")).code == 404

    rooms = await root.get(f"{ADMIN}/rooms")
    assert rooms.json["total_rooms"] == 1 and rooms.json["rooms"][0]["joined_members"] == 1
    info = await root.get(f"{ADMIN}/rooms/{q(room_id)}")
    assert (
        info.json["name"] == "Ops"
        and info.json["creator"] == alice.user_id
        and info.json["joined_members"] == 1
    )
    assert (await root.get(f"{ADMIN}/rooms/{q('!nope:test.local')}")).code == 404

    assert (await root.post(f"{ADMIN}/users/{q(alice.user_id)}/deactivate")).code == 200
    assert (await alice.get(f"{V3}/account/whoami")).code == 401
    login = await anon.post(
        f"{V3}/login",
        {"type": "m.login.password", "user": "alice", "password": "pw-a"},
        token=False,
    )
    assert login.code == 403
    assert alice.user_id not in await hs.stores.members.get_users_in_room(room_id)
    assert (await root.get(f"{ADMIN}/users/{q(alice.user_id)}")).json["deactivated"] is True
    bad = await root.get(f"{ADMIN}/users", query={"limit": "x"})
    assert bad.code == 400
