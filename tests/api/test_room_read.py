"""Room history over HTTP: /messages pagination both ways, tokens, filters,
lazy-loaded members, departed users, non-members, /context and bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted

from tests.support.client import JsonClient, q

V3 = "/_matrix/client/v3"
NUL_ROOM = "!a" + chr(0) + ":test.local"


async def make_room(client: JsonClient, **extra: Any) -> str:
    created = await client.post(f"{V3}/createRoom", {"preset": "public_chat", **extra})
    assert created.code == 200, created
    return created.json["room_id"]


async def send(client: JsonClient, room_id: str, body: str, **content: Any) -> str:
    resp = await client.put(
        f"{V3}/rooms/{q(room_id)}/send/m.room.message/{q(body)}",
        {"msgtype": "m.text", "body": body, **content},
    )
    assert resp.code == 200, resp
    return resp.json["event_id"]


async def messages(client: JsonClient, room_id: str, **query: Any) -> Any:
    if "filter" in query and not isinstance(query["filter"], str):
        query["filter"] = json.dumps(query["filter"])
    return await client.get(f"{V3}/rooms/{q(room_id)}/messages", query=query)


async def paginate_all(client: JsonClient, room_id: str, direction: str, limit: int) -> list[Any]:
    """Follow `end` tokens until it is omitted; check `start` echoes `from`."""
    events: list[Any] = []
    token = None
    for _ in range(200):
        query: dict[str, Any] = {"dir": direction, "limit": limit}
        if token is not None:
            query["from"] = token
        resp = await messages(client, room_id, **query)
        assert resp.code == 200, resp
        assert len(resp.json["chunk"]) <= limit
        if token is not None:
            assert resp.json["start"] == token
        events.extend(resp.json["chunk"])
        token = resp.json.get("end")
        if token is None:
            return events
    raise AssertionError("pagination never ended")


def bodies(events: list[Any]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


@pytest_twisted.ensureDeferred
async def test_paginating_backwards_then_forwards_returns_every_event_once_in_order(server):
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await make_room(alice)
    sent = [await send(alice, room_id, f"m{i}") for i in range(23)]

    backwards = await paginate_all(alice, room_id, "b", 5)
    ids = [e["event_id"] for e in backwards]
    assert len(ids) == len(set(ids)), "a page repeated an event"
    assert bodies(backwards) == [f"m{i}" for i in reversed(range(23))]
    # The whole timeline, creation included, newest first.
    assert backwards[-1]["type"] == "m.room.create"
    assert backwards[0]["event_id"] == sent[-1]
    assert all(e["room_id"] == room_id and "age" in e["unsigned"] for e in backwards)

    forwards = await paginate_all(alice, room_id, "f", 4)
    assert [e["event_id"] for e in forwards] == list(reversed(ids))


@pytest_twisted.ensureDeferred
async def test_end_token_round_trips_in_both_directions_without_gaps(server):
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await make_room(alice)
    sent = [await send(alice, room_id, f"m{i}") for i in range(10)]

    page1 = await messages(alice, room_id, dir="b", limit=3)
    assert [e["event_id"] for e in page1.json["chunk"]] == sent[-1:-4:-1]
    page2 = await messages(alice, room_id, dir="b", limit=3, **{"from": page1.json["end"]})
    assert [e["event_id"] for e in page2.json["chunk"]] == sent[-4:-7:-1]
    # Forwards from page2's end gives back page2 then page1, in order: no gap.
    again = await messages(alice, room_id, dir="f", limit=6, **{"from": page2.json["end"]})
    assert [e["event_id"] for e in again.json["chunk"]] == sent[4:10]
    assert "end" not in again.json, "nothing newer than the last message"
    # `to` stops a backwards page at page1's end: exactly page1's events again.
    bounded = await messages(alice, room_id, dir="b", limit=50, to=page1.json["end"])
    assert [e["event_id"] for e in bounded.json["chunk"]] == sent[-1:-4:-1]
    assert "end" not in bounded.json
    # And a forwards page bounded by `to` ends at it.
    head = await messages(alice, room_id, dir="f", limit=100, to=page2.json["end"])
    assert head.json["chunk"][-1]["event_id"] == sent[3]
    assert "end" not in head.json


@pytest_twisted.ensureDeferred
async def test_sync_stream_token_is_accepted_as_from(server):
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await make_room(alice)
    early = [await send(alice, room_id, f"early{i}") for i in range(4)]
    token = hs.current_token().to_string()
    assert token.startswith("s")
    late = [await send(alice, room_id, f"late{i}") for i in range(3)]

    back = await messages(alice, room_id, dir="b", limit=3, **{"from": token})
    assert back.code == 200, back
    assert [e["event_id"] for e in back.json["chunk"]] == early[::-1][:3]
    assert back.json["start"] == token
    forward = await messages(alice, room_id, dir="f", limit=10, **{"from": token})
    assert [e["event_id"] for e in forward.json["chunk"]] == late
    assert "end" not in forward.json


@pytest_twisted.ensureDeferred
async def test_limit_defaults_to_ten_and_is_capped(server):
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await make_room(alice)
    for i in range(12):
        await send(alice, room_id, f"m{i}")
    default = await messages(alice, room_id, dir="b")
    assert len(default.json["chunk"]) == 10 and "end" in default.json
    huge = await messages(alice, room_id, dir="b", limit=10**9)
    assert huge.code == 200 and "end" not in huge.json
    assert bodies(huge.json["chunk"]) == [f"m{i}" for i in reversed(range(12))]
    none = await messages(alice, room_id, dir="b", limit=0)
    assert none.code == 200 and none.json["chunk"] == [] and "end" in none.json


@pytest_twisted.ensureDeferred
async def test_filters_and_lazy_loaded_members(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    carol = await anon.register("carol")
    room_id = await make_room(alice)
    for user in (bob, carol):
        assert (await user.post(f"{V3}/rooms/{q(room_id)}/join")).code == 200
    await send(alice, room_id, "a1")
    await send(bob, room_id, "b1", url="mxc://test.local/file")
    await send(alice, room_id, "a2")
    await send(bob, room_id, "b2")

    only_bob = await messages(alice, room_id, dir="b", filter={"senders": [bob.user_id]})
    assert {e["sender"] for e in only_bob.json["chunk"]} == {bob.user_id}
    assert bodies(only_bob.json["chunk"]) == ["b2", "b1"]

    not_bob = await messages(
        alice, room_id, dir="b", filter={"not_senders": [bob.user_id], "types": ["m.room.message"]}
    )
    assert bodies(not_bob.json["chunk"]) == ["a2", "a1"]
    assert all(e["type"] == "m.room.message" for e in not_bob.json["chunk"])

    with_url = await messages(alice, room_id, dir="b", filter={"contains_url": True})
    assert bodies(with_url.json["chunk"]) == ["b1"]
    assert len(with_url.json["chunk"]) == 1
    # contains_url is checked after reading: a 1-event page still reaches b1,
    # two events back, and its `end` continues past it.
    one = await messages(alice, room_id, dir="b", limit=1, filter={"contains_url": True})
    assert bodies(one.json["chunk"]) == ["b1"] and "end" in one.json
    rest = await messages(
        alice,
        room_id,
        dir="b",
        limit=100,
        filter={"contains_url": True},
        **{"from": one.json["end"]},
    )
    assert rest.json["chunk"] == [] and "end" not in rest.json

    wildcard = await messages(alice, room_id, dir="f", filter={"types": ["m.room.mem*"]})
    assert wildcard.json["chunk"]
    assert {e["type"] for e in wildcard.json["chunk"]} == {"m.room.member"}
    no_members = await messages(
        alice, room_id, dir="b", limit=100, filter={"not_types": ["m.room.m*"]}
    )
    assert not any(e["type"].startswith("m.room.m") for e in no_members.json["chunk"])
    assert any(e["type"] == "m.room.create" for e in no_members.json["chunk"])

    filter_limit = await messages(alice, room_id, dir="b", filter={"limit": 2})
    assert len(filter_limit.json["chunk"]) == 2

    lazy = await messages(alice, room_id, dir="b", limit=2, filter={"lazy_load_members": True})
    assert bodies(lazy.json["chunk"]) == ["b2", "a2"]
    members = {e["state_key"]: e for e in lazy.json["state"]}
    assert set(members) == {alice.user_id, bob.user_id}, "carol sent nothing in the chunk"
    assert all(e["type"] == "m.room.member" for e in members.values())
    plain = await messages(alice, room_id, dir="b", limit=2)
    assert "state" not in plain.json


@pytest_twisted.ensureDeferred
async def test_departed_user_sees_history_only_up_to_their_leave(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    room_id = await make_room(alice, name="Before")
    assert (await bob.post(f"{V3}/rooms/{q(room_id)}/join")).code == 200
    seen = await send(alice, room_id, "while bob was here")
    assert (await bob.post(f"{V3}/rooms/{q(room_id)}/leave")).code == 200
    hidden = await send(alice, room_id, "after bob left")
    assert (
        await alice.put(f"{V3}/rooms/{q(room_id)}/state/m.room.name", {"name": "After"})
    ).code == 200

    history = await paginate_all(bob, room_id, "b", 3)
    # The newest events bob sees are his own leave, then the last message before it.
    assert history[0]["type"] == "m.room.member" and history[0]["state_key"] == bob.user_id
    assert history[0]["content"]["membership"] == "leave"
    assert history[1]["event_id"] == seen
    ids = [e["event_id"] for e in history]
    assert hidden not in ids
    forwards = await paginate_all(bob, room_id, "f", 4)
    assert [e["event_id"] for e in forwards] == ids[::-1]
    # A stream token from after the leave is clamped too.
    late = await messages(bob, room_id, dir="b", **{"from": hs.current_token().to_string()})
    assert hidden not in [e["event_id"] for e in late.json["chunk"]]

    assert (await bob.get(f"{V3}/rooms/{q(room_id)}/event/{q(hidden)}")).code == 404
    assert (await bob.get(f"{V3}/rooms/{q(room_id)}/event/{q(seen)}")).code == 200
    assert (await bob.get(f"{V3}/rooms/{q(room_id)}/context/{q(hidden)}")).code == 404
    context = await bob.get(f"{V3}/rooms/{q(room_id)}/context/{q(seen)}", query={"limit": 10})
    assert context.code == 200
    assert hidden not in [e["event_id"] for e in context.json["events_after"]]
    name = await bob.get(f"{V3}/rooms/{q(room_id)}/state/m.room.name")
    assert name.code == 200 and name.json == {"name": "Before"}
    assert (await alice.get(f"{V3}/rooms/{q(room_id)}/state/m.room.name")).json == {"name": "After"}


@pytest_twisted.ensureDeferred
async def test_non_members_are_forbidden_unless_world_readable(server):
    hs, anon = server
    alice = await anon.register("alice")
    carol = await anon.register("carol")
    room_id = await make_room(alice)
    event_id = await send(alice, room_id, "secret")
    room = f"{V3}/rooms/{q(room_id)}"
    for path in (
        f"{room}/messages?dir=b",
        f"{room}/state",
        f"{room}/state/m.room.create",
        f"{room}/members",
        f"{room}/joined_members",
        f"{room}/context/{q(event_id)}",
    ):
        resp = await carol.get(path)
        assert resp.code == 403 and resp.json["errcode"] == "M_FORBIDDEN", (path, resp)
    # An unknown room looks the same as a room one may not read.
    unknown = await carol.get(f"{V3}/rooms/{q('!nope:test.local')}/messages", query={"dir": "b"})
    assert unknown.code == 403 and unknown.json["errcode"] == "M_FORBIDDEN"

    assert (
        await alice.put(
            f"{room}/state/m.room.history_visibility", {"history_visibility": "world_readable"}
        )
    ).code == 200
    await send(alice, room_id, "public")
    readable = await paginate_all(carol, room_id, "b", 5)
    # Visibility is per event: only what was sent while world_readable shows.
    assert bodies(readable) == ["public"]
    assert readable[1]["type"] == "m.room.history_visibility"
    assert (await carol.get(f"{room}/state")).code == 200
    # joined_members stays for current members only.
    assert (await carol.get(f"{room}/joined_members")).code == 403


@pytest_twisted.ensureDeferred
async def test_context_returns_neighbours_state_and_usable_tokens(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    room_id = await make_room(alice)
    assert (await bob.post(f"{V3}/rooms/{q(room_id)}/join")).code == 200
    sent = [await send(alice if i % 2 else bob, room_id, f"m{i}") for i in range(9)]

    resp = await alice.get(f"{V3}/rooms/{q(room_id)}/context/{q(sent[4])}", query={"limit": 4})
    assert resp.code == 200, resp
    body = resp.json
    assert body["event"]["event_id"] == sent[4]
    assert [e["event_id"] for e in body["events_before"]] == [sent[3], sent[2]]
    assert [e["event_id"] for e in body["events_after"]] == [sent[5], sent[6]]
    state_types = {(e["type"], e["state_key"]) for e in body["state"]}
    assert ("m.room.create", "") in state_types and ("m.room.member", bob.user_id) in state_types

    older = await messages(alice, room_id, dir="b", limit=2, **{"from": body["start"]})
    assert [e["event_id"] for e in older.json["chunk"]] == [sent[1], sent[0]]
    newer = await messages(alice, room_id, dir="f", limit=5, **{"from": body["end"]})
    assert [e["event_id"] for e in newer.json["chunk"]] == sent[7:]

    lazy = await alice.get(
        f"{V3}/rooms/{q(room_id)}/context/{q(sent[4])}",
        query={"limit": 0, "filter": json.dumps({"lazy_load_members": True})},
    )
    assert lazy.json["events_before"] == [] and lazy.json["events_after"] == []
    assert [(e["type"], e["state_key"]) for e in lazy.json["state"]] == [
        ("m.room.member", bob.user_id)
    ]
    filtered = await alice.get(
        f"{V3}/rooms/{q(room_id)}/context/{q(sent[4])}",
        query={"limit": 4, "filter": json.dumps({"senders": [alice.user_id]})},
    )
    assert [e["event_id"] for e in filtered.json["events_before"]] == [sent[3], sent[1]]
    assert filtered.json["event"]["sender"] == bob.user_id, "the filter never hides the event"


@pytest_twisted.ensureDeferred
async def test_bad_input_gives_matrix_errors_not_500(server):
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await make_room(alice)
    event_id = await send(alice, room_id, "x")
    room = f"{V3}/rooms/{q(room_id)}"
    cases = [
        (f"{room}/messages", {"dir": "b", "from": "garbage"}, "M_INVALID_PARAM"),
        (f"{room}/messages", {"dir": "b", "from": "t12"}, "M_INVALID_PARAM"),
        (f"{room}/messages", {"dir": "b", "from": "tA-1"}, "M_INVALID_PARAM"),
        (f"{room}/messages", {"dir": "b", "from": "s"}, "M_INVALID_PARAM"),
        (f"{room}/messages", {"dir": "b", "from": "sx_y"}, "M_INVALID_PARAM"),
        (f"{room}/messages", {"dir": "b", "to": "t1-1-1"}, "M_INVALID_PARAM"),
        (f"{room}/messages", {"dir": "b", "from": "t9999999999999999999-1"}, "M_INVALID_PARAM"),
        (f"{room}/messages", {"dir": "f", "from": "s99999999999999999999"}, "M_INVALID_PARAM"),
        (f"{room}/messages", {"dir": "sideways"}, "M_INVALID_PARAM"),
        (f"{room}/messages", {}, "M_MISSING_PARAM"),
        (f"{room}/messages", {"dir": "b", "limit": "-1"}, "M_INVALID_PARAM"),
        (f"{room}/messages", {"dir": "b", "limit": "ten"}, "M_INVALID_PARAM"),
        (f"{room}/messages", {"dir": "b", "filter": "{"}, "M_NOT_JSON"),
        (f"{room}/messages", {"dir": "b", "filter": "[]"}, "M_BAD_JSON"),
        (f"{room}/messages", {"dir": "b", "filter": '{"types": "m.room.message"}'}, "M_BAD_JSON"),
        (f"{room}/messages", {"dir": "b", "filter": '{"limit": 0}'}, "M_BAD_JSON"),
        (f"{room}/messages", {"dir": "b", "filter": '{"contains_url": 1}'}, "M_BAD_JSON"),
        (f"{V3}/rooms/not-a-room/messages", {"dir": "b"}, "M_INVALID_PARAM"),
        # NUL cannot reach PostgreSQL (it would be a 500 there).
        (f"{V3}/rooms/{q(NUL_ROOM)}/messages", {"dir": "b"}, "M_INVALID_PARAM"),
        (f"{room}/state/{q('m.room.name' + chr(0))}", {}, "M_INVALID_PARAM"),
        (f"{room}/state/m.room.member/{q(chr(0))}", {}, "M_INVALID_PARAM"),
        (f"{room}/event/{q('$' + chr(0))}", {}, "M_INVALID_PARAM"),
        (f"{room}/messages", {"dir": "b", "filter": '{"senders": ["\\u0000"]}'}, "M_BAD_JSON"),
        (f"{room}/context/{q(event_id)}", {"limit": "x"}, "M_INVALID_PARAM"),
        (f"{room}/context/{q(event_id)}", {"filter": "nope"}, "M_NOT_JSON"),
        (f"{room}/context/{q('$unknown')}", {}, "M_NOT_FOUND"),
        (f"{room}/context/notanevent", {}, "M_INVALID_PARAM"),
        (f"{room}/event/{q('$unknown')}", {}, "M_NOT_FOUND"),
        (f"{room}/members", {"at": "bogus"}, "M_INVALID_PARAM"),
        (f"{room}/members", {"membership": "joined"}, "M_INVALID_PARAM"),
    ]
    for path, query, errcode in cases:
        resp = await alice.get(path, query=query)
        assert 400 <= resp.code < 500, (path, query, resp)
        assert resp.json["errcode"] == errcode, (path, query, resp)

    # An event of another room is not found through this one.
    other = await make_room(alice)
    other_event = await send(alice, other, "elsewhere")
    assert (await alice.get(f"{room}/event/{q(other_event)}")).code == 404
    assert (await alice.get(f"{room}/context/{q(other_event)}")).code == 404
    # No access token at all.
    assert (await alice.get(f"{room}/messages", query={"dir": "b"}, token=False)).code == 401
