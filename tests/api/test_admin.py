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


@pytest_twisted.ensureDeferred
async def test_every_admin_endpoint_refuses_a_non_admin_with_403(server):
    hs, anon = server
    alice = await anon.register("alice")
    room_id = (await alice.post(f"{V3}/createRoom", {})).json["room_id"]
    requests = [
        ("GET", "/server_version"),
        ("GET", "/users"),
        ("GET", f"/users/{q(alice.user_id)}"),
        ("POST", f"/users/{q(alice.user_id)}/deactivate"),
        ("GET", "/rooms"),
        ("GET", f"/rooms/{q(room_id)}"),
    ]
    for method, path in requests:
        resp = await alice.request(method, ADMIN + path, {} if method == "POST" else None)
        assert (resp.code, resp.json["errcode"]) == (403, "M_FORBIDDEN"), (path, resp)
    # Nothing happened: alice is still active.
    assert (await alice.get(f"{V3}/account/whoami")).code == 200


@pytest_twisted.ensureDeferred
async def test_unknown_users_and_rooms_are_404(server):
    hs, anon = server
    root = await _admin(hs, anon)
    for method, path in (
        ("GET", f"/users/{q('@ghost:test.local')}"),
        ("POST", f"/users/{q('@ghost:test.local')}/deactivate"),
        ("GET", f"/users/{q('@someone:elsewhere.example')}"),
        ("GET", f"/rooms/{q('!nope:test.local')}"),
    ):
        resp = await root.request(method, ADMIN + path, {} if method == "POST" else None)
        assert (resp.code, resp.json["errcode"]) == (404, "M_NOT_FOUND"), (path, resp)
    # Malformed IDs are the client's mistake, not an unknown entity.
    assert (await root.get(f"{ADMIN}/users/{q('ghost')}")).code == 400
    assert (await root.get(f"{ADMIN}/rooms/{q('nope')}")).code == 400


@pytest_twisted.ensureDeferred
async def test_user_and_room_lists_page_through_everything_once(server):
    hs, anon = server
    root = await _admin(hs, anon)
    users = [await anon.register(f"user{i}") for i in range(5)]
    rooms = {(await users[i].post(f"{V3}/createRoom", {})).json["room_id"] for i in range(5)}

    seen_users: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        query = {"limit": 2, **({"from": token} if token else {})}
        page = await root.get(f"{ADMIN}/users", query=query)
        assert page.code == 200 and page.json["total"] == 6 and len(page.json["users"]) <= 2
        seen_users += [u["name"] for u in page.json["users"]]
        pages += 1
        token = page.json.get("next_token")
        if token is None:
            break
    assert pages == 3
    assert sorted(seen_users) == sorted(["@root:test.local", *(u.user_id for u in users)])
    assert len(set(seen_users)) == len(seen_users)

    seen_rooms: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = await root.get(f"{ADMIN}/rooms", query={"limit": 2, "from": offset})
        assert page.code == 200 and page.json["total_rooms"] == 5 and page.json["offset"] == offset
        seen_rooms += [r["room_id"] for r in page.json["rooms"]]
        offset = page.json.get("next_batch")
    assert sorted(seen_rooms) == sorted(rooms) and len(seen_rooms) == 5
    past_end = await root.get(f"{ADMIN}/rooms", query={"from": 10})
    assert past_end.json["rooms"] == [] and "next_batch" not in past_end.json
    for bad in ({"limit": 0}, {"from": -1}):
        assert (await root.get(f"{ADMIN}/users", query=bad)).code == 400, bad
    # Limits over the maximum (1000) are capped, not refused.
    assert len((await root.get(f"{ADMIN}/users", query={"limit": 5000})).json["users"]) == 6
