"""The room directory over HTTP: alias lifecycle and permissions, room
directory visibility, and the public room list (fields, search, paging)."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.api.test_room_read import make_room
from tests.support.client import JsonClient, q

V3 = "/_matrix/client/v3"


def alias_path(alias: str) -> str:
    return f"{V3}/directory/room/{q(alias)}"


@pytest_twisted.ensureDeferred
async def test_alias_lifecycle_and_permissions(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    carol = await anon.register("carol")
    room_id = await make_room(alice)
    assert (await bob.post(f"{V3}/rooms/{q(room_id)}/join")).code == 200
    alias = "#lobby:test.local"

    # Only members may point an alias at a room.
    denied = await carol.put(alias_path(alias), {"room_id": room_id})
    assert denied.code == 403 and denied.json["errcode"] == "M_FORBIDDEN"
    assert (await bob.put(alias_path(alias), {"room_id": room_id})).code == 200
    taken = await alice.put(alias_path(alias), {"room_id": room_id})
    assert taken.code == 409 and taken.json["errcode"] == "M_ROOM_IN_USE"

    resolved = await anon.get(alias_path(alias), token=False)
    assert resolved.code == 200
    assert resolved.json == {"room_id": room_id, "servers": ["test.local"]}
    listed = await carol.get(f"{V3}/rooms/{q(room_id)}/aliases")
    assert listed.code == 403, "carol is not in the room"
    assert (await alice.get(f"{V3}/rooms/{q(room_id)}/aliases")).json == {"aliases": [alias]}

    # Deleting: not carol (stranger), yes the creator (bob, power 0)...
    assert (await carol.delete(alias_path(alias))).code == 403
    assert (await bob.delete(alias_path(alias))).code == 200
    gone = await anon.get(alias_path(alias), token=False)
    assert gone.code == 404 and gone.json["errcode"] == "M_NOT_FOUND"
    assert (await bob.delete(alias_path(alias))).code == 404
    # ... and a room admin who did not create it; but not a plain member.
    assert (await bob.put(alias_path("#two:test.local"), {"room_id": room_id})).code == 200
    assert (await alice.put(alias_path("#three:test.local"), {"room_id": room_id})).code == 200
    assert (await bob.delete(alias_path("#three:test.local"))).code == 403
    assert (await alice.delete(alias_path("#two:test.local"))).code == 200
    assert (await alice.get(f"{V3}/rooms/{q(room_id)}/aliases")).json == {
        "aliases": ["#three:test.local"]
    }

    # Joining through a new alias works (the writes and the join share the store).
    assert (await carol.post(f"{V3}/join/{q('#three:test.local')}")).code == 200


@pytest_twisted.ensureDeferred
async def test_alias_bad_input(server):
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await make_room(alice)
    cases: list[tuple[str, str, Any, int, str]] = [
        ("PUT", alias_path("#x:other.server"), {"room_id": room_id}, 400, "M_INVALID_PARAM"),
        ("PUT", alias_path("no-hash:test.local"), {"room_id": room_id}, 400, "M_INVALID_PARAM"),
        ("PUT", alias_path("#nocolon"), {"room_id": room_id}, 400, "M_INVALID_PARAM"),
        ("PUT", alias_path("#" + "a" * 300 + ":test.local"), {"room_id": room_id}, 400, None),
        ("PUT", alias_path("#x:test.local"), {}, 400, "M_BAD_JSON"),
        ("PUT", alias_path("#x:test.local"), {"room_id": 5}, 400, "M_BAD_JSON"),
        ("PUT", alias_path("#x:test.local"), {"room_id": "nope"}, 400, "M_INVALID_PARAM"),
        ("PUT", alias_path("#x:test.local"), {"room_id": "!gone:test.local"}, 404, "M_NOT_FOUND"),
        ("PUT", alias_path("#x:test.local"), [1], 400, "M_BAD_JSON"),
        ("GET", alias_path("bad"), None, 400, "M_INVALID_PARAM"),
        ("GET", alias_path("#a" + chr(0) + ":test.local"), None, 400, "M_INVALID_PARAM"),
        ("PUT", alias_path("#x:test.local"), {"room_id": "!a" + chr(0) + ":x"}, 400, None),
        ("GET", f"{V3}/rooms/{q('!a' + chr(0) + ':x')}/aliases", None, 400, "M_INVALID_PARAM"),
        ("GET", f"{V3}/directory/list/room/{q('!a' + chr(0) + ':x')}", None, 400, None),
        ("GET", alias_path("#elsewhere:other.server"), None, 404, "M_NOT_FOUND"),
        ("DELETE", alias_path("#missing:test.local"), None, 404, "M_NOT_FOUND"),
        ("GET", f"{V3}/rooms/bad/aliases", None, 400, "M_INVALID_PARAM"),
    ]
    for method, path, body, code, errcode in cases:
        resp = await alice.request(method, path, body)
        assert resp.code == code, (method, path, body, resp)
        if errcode is not None:
            assert resp.json["errcode"] == errcode, (method, path, resp)
    raw = await alice.request("PUT", alias_path("#x:test.local"), raw=b"{not json")
    assert raw.code == 400 and raw.json["errcode"] == "M_NOT_JSON"
    assert (await alice.delete(alias_path("#x:test.local"), token=False)).code == 401


@pytest_twisted.ensureDeferred
async def test_room_directory_visibility_needs_a_moderator(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    room_id = await make_room(alice)
    path = f"{V3}/directory/list/room/{q(room_id)}"
    assert (await bob.post(f"{V3}/rooms/{q(room_id)}/join")).code == 200

    assert (await anon.get(path, token=False)).json == {"visibility": "private"}
    denied = await bob.put(path, {"visibility": "public"})
    assert denied.code == 403 and denied.json["errcode"] == "M_FORBIDDEN"
    assert (await alice.put(path, {"visibility": "public"})).code == 200
    assert (await anon.get(path, token=False)).json == {"visibility": "public"}
    assert await hs.stores.rooms.is_room_public(room_id)
    assert (await alice.put(path, {"visibility": "private"})).code == 200
    assert (await anon.get(path, token=False)).json == {"visibility": "private"}
    # The body's visibility defaults to public.
    assert (await alice.put(path, {})).code == 200
    assert (await anon.get(path, token=False)).json == {"visibility": "public"}

    bad = await alice.put(path, {"visibility": "secret"})
    assert bad.code == 400 and bad.json["errcode"] == "M_BAD_JSON"
    unknown = f"{V3}/directory/list/room/{q('!gone:test.local')}"
    assert (await anon.get(unknown, token=False)).json["errcode"] == "M_NOT_FOUND"
    assert (await alice.put(unknown, {"visibility": "public"})).code == 404
    assert (await anon.get(f"{V3}/directory/list/room/bad", token=False)).code == 400


async def publish(client: JsonClient, name: str, **extra: Any) -> str:
    created = await client.post(
        f"{V3}/createRoom",
        {"preset": "public_chat", "visibility": "public", "name": name, **extra},
    )
    assert created.code == 200, created
    return created.json["room_id"]


@pytest_twisted.ensureDeferred
async def test_public_rooms_fields_search_and_filters(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    big = await publish(
        alice,
        "Cheese Club",
        topic="Tasty cheese",
        room_alias_name="cheese",
        initial_state=[
            {"type": "m.room.avatar", "content": {"url": "mxc://test.local/c"}},
            {
                "type": "m.room.history_visibility",
                "content": {"history_visibility": "world_readable"},
            },
            {"type": "m.room.guest_access", "content": {"guest_access": "can_join"}},
        ],
    )
    assert (await bob.post(f"{V3}/rooms/{q(big)}/join")).code == 200
    space = await publish(alice, "Space", creation_content={"type": "m.space"})
    await make_room(alice, name="Private")  # not published

    resp = await anon.get(f"{V3}/publicRooms", token=False)
    assert resp.code == 200, resp
    chunk = resp.json["chunk"]
    assert [r["room_id"] for r in chunk] == [big, space], "largest first, private left out"
    assert resp.json["total_room_count_estimate"] == 2
    assert "next_batch" not in resp.json and "prev_batch" not in resp.json
    assert chunk[0] == {
        "room_id": big,
        "num_joined_members": 2,
        "name": "Cheese Club",
        "topic": "Tasty cheese",
        "avatar_url": "mxc://test.local/c",
        "canonical_alias": "#cheese:test.local",
        "world_readable": True,
        "guest_can_join": True,
        "join_rule": "public",
    }
    assert chunk[1]["room_type"] == "m.space" and chunk[1]["world_readable"] is False

    async def search(body: dict[str, Any]) -> list[str]:
        found = await alice.post(f"{V3}/publicRooms", body)
        assert found.code == 200, found
        return [r["room_id"] for r in found.json["chunk"]]

    assert await search({"filter": {"generic_search_term": "CHEESE"}}) == [big]
    assert await search({"filter": {"generic_search_term": "#cheese:"}}) == [big]
    assert await search({"filter": {"generic_search_term": "tasty"}}) == [big]
    assert await search({"filter": {"generic_search_term": "nothing like it"}}) == []
    assert await search({"filter": {"room_types": ["m.space"]}}) == [space]
    assert await search({"filter": {"room_types": [None]}}) == [big]
    assert await search({}) == [big, space]

    # Unpublishing removes a room at once.
    assert (
        await alice.put(f"{V3}/directory/list/room/{q(space)}", {"visibility": "private"})
    ).code == 200
    assert await search({}) == [big]


@pytest_twisted.ensureDeferred
async def test_public_rooms_pages_forwards_and_back_without_gaps(server):
    hs, anon = server
    alice = await anon.register("alice")
    rooms = [await publish(alice, f"room {i}") for i in range(7)]
    expected = sorted(rooms)  # all have one member: ordered by room ID

    seen: list[str] = []
    pages: list[dict[str, Any]] = []
    since = None
    for _ in range(10):
        query: dict[str, Any] = {"limit": 3}
        if since:
            query["since"] = since
        page = await anon.get(f"{V3}/publicRooms", query=query, token=False)
        assert page.code == 200, page
        pages.append(page.json)
        seen.extend(r["room_id"] for r in page.json["chunk"])
        since = page.json.get("next_batch")
        if since is None:
            break
    assert seen == expected
    assert [len(p["chunk"]) for p in pages] == [3, 3, 1]
    assert "prev_batch" not in pages[0] and "prev_batch" in pages[2]

    # prev_batch of the last page leads back to the middle page.
    back = await alice.post(f"{V3}/publicRooms", {"limit": 3, "since": pages[2]["prev_batch"]})
    assert [r["room_id"] for r in back.json["chunk"]] == expected[3:6]
    first = await alice.post(f"{V3}/publicRooms", {"limit": 3, "since": back.json["prev_batch"]})
    assert [r["room_id"] for r in first.json["chunk"]] == expected[:3]
    assert "prev_batch" not in first.json


@pytest_twisted.ensureDeferred
async def test_public_rooms_bad_input(server):
    hs, anon = server
    alice = await anon.register("alice")
    for query in (
        {"limit": "x"},
        {"limit": "0"},
        {"since": "garbage"},
        {"since": "p!!"},
        {"server": "other.server"},
    ):
        resp = await anon.get(f"{V3}/publicRooms", query=query, token=False)
        assert resp.code == 400 and resp.json["errcode"] == "M_INVALID_PARAM", (query, resp)
    for body in (
        {"limit": "3"},
        {"limit": -1},
        {"since": 5},
        {"filter": "cheese"},
        {"filter": {"generic_search_term": 5}},
        {"filter": {"room_types": "m.space"}},
        [1, 2],
    ):
        resp = await alice.post(f"{V3}/publicRooms", body)
        assert resp.code == 400 and resp.json["errcode"] == "M_BAD_JSON", (body, resp)
    assert (await anon.post(f"{V3}/publicRooms", {}, token=False)).code == 401
    ok = await anon.get(f"{V3}/publicRooms", query={"server": "test.local"}, token=False)
    assert ok.code == 200 and ok.json["chunk"] == []


@pytest_twisted.ensureDeferred
async def test_public_rooms_reads_a_fixed_number_of_transactions_whatever_the_room_count(server):
    """No per-room queries: listing 2 or 8 published rooms costs the same."""
    hs, anon = server
    alice = await anon.register("alice")
    db = hs.db
    calls: list[str] = []
    original = db.run_interaction

    def counting(desc: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(desc)
        return original(desc, func, *args, **kwargs)

    async def count_listing() -> int:
        calls.clear()
        db.run_interaction = counting
        try:
            resp = await anon.get(f"{V3}/publicRooms", token=False)
        finally:
            db.run_interaction = original
        assert resp.code == 200
        return len(calls)

    for i in range(2):
        await publish(alice, f"small {i}")
    hs.stores.events.event_cache.invalidate_all()
    few = await count_listing()
    for i in range(6):
        await publish(alice, f"more {i}")
    hs.stores.events.event_cache.invalidate_all()
    many = await count_listing()
    assert few == many <= 2, calls
