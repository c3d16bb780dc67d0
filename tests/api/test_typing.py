"""PUT /rooms/{roomId}/typing/{userId} over HTTP and the m.typing /sync section."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor, task

from tests.api.sync_sections_helper import long_poll, room_ephemeral, sections_sync, shared_room
from tests.support.client import q

V3 = "/_matrix/client/v3"


def typing_path(room_id: str, user_id: str) -> str:
    return f"{V3}/rooms/{q(room_id)}/typing/{q(user_id)}"


@pytest_twisted.ensureDeferred
async def test_typing_reaches_other_members_and_stopping_clears_it(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    room_id = await shared_room(alice, bob)

    initial, since = await sections_sync(hs, bob.user_id)
    assert room_ephemeral(initial, room_id, "m.typing") == []

    before = hs.current_token().typing
    put = await alice.put(typing_path(room_id, alice.user_id), {"typing": True, "timeout": 30000})
    assert put.code == 200 and put.json == {}
    assert hs.current_token().typing > before

    changed, since = await sections_sync(hs, bob.user_id, since)
    assert room_ephemeral(changed, room_id, "m.typing") == [
        {"type": "m.typing", "content": {"user_ids": [alice.user_id]}}
    ]
    # Nothing new: the section leaves the response untouched.
    nothing, _ = await sections_sync(hs, bob.user_id, since)
    assert nothing == {}
    # An initial sync sees who is typing now.
    fresh, _ = await sections_sync(hs, bob.user_id)
    assert room_ephemeral(fresh, room_id, "m.typing")[0]["content"]["user_ids"] == [alice.user_id]

    stop = await alice.put(typing_path(room_id, alice.user_id), {"typing": False})
    assert stop.code == 200
    stopped, _ = await sections_sync(hs, bob.user_id, since)
    assert room_ephemeral(stopped, room_id, "m.typing") == [
        {"type": "m.typing", "content": {"user_ids": []}}
    ]


@pytest_twisted.ensureDeferred
async def test_typing_times_out(server):
    hs, anon = server
    alice = await anon.register("tim")
    room_id = await shared_room(alice)
    put = await alice.put(typing_path(room_id, alice.user_id), {"typing": True, "timeout": 50})
    assert put.code == 200
    assert hs.typing.typing_users(room_id) == [alice.user_id]
    await task.deferLater(reactor, 0.2, lambda: None)
    assert hs.typing.typing_users(room_id) == []


@pytest_twisted.ensureDeferred
async def test_typing_refusals_and_bad_input(server):
    hs, anon = server
    alice = await anon.register("ann")
    bob = await anon.register("ben")
    outsider = await anon.register("olga")
    room_id = await shared_room(alice, bob)

    for_someone_else = await alice.put(typing_path(room_id, bob.user_id), {"typing": True})
    assert for_someone_else.code == 403 and for_someone_else.json["errcode"] == "M_FORBIDDEN"
    not_joined = await outsider.put(typing_path(room_id, outsider.user_id), {"typing": True})
    assert not_joined.code == 403 and not_joined.json["errcode"] == "M_FORBIDDEN"
    unknown_room = await alice.put(typing_path("!nope:test.local", alice.user_id), {"typing": True})
    assert unknown_room.code == 403

    path = typing_path(room_id, alice.user_id)
    for body, errcode in (
        ({}, "M_BAD_JSON"),
        ({"typing": "yes"}, "M_BAD_JSON"),
        ({"typing": True, "timeout": "soon"}, "M_BAD_JSON"),
        ({"typing": True, "timeout": -5}, "M_BAD_JSON"),
        ([1, 2], "M_BAD_JSON"),
    ):
        resp = await alice.put(path, body)
        assert resp.code == 400 and resp.json["errcode"] == errcode, (body, resp)
    not_json = await alice.request("PUT", path, raw=b"{nope")
    assert not_json.code == 400 and not_json.json["errcode"] == "M_NOT_JSON"
    bad_room = await alice.put(typing_path("not-a-room", alice.user_id), {"typing": True})
    assert bad_room.code == 400 and bad_room.json["errcode"] == "M_INVALID_PARAM"
    no_token = await alice.put(path, {"typing": True}, token=False)
    assert no_token.code == 401 and no_token.json["errcode"] == "M_MISSING_TOKEN"
    bad_token = await alice.put(path, {"typing": True}, token="nonsense")
    assert bad_token.code == 401 and bad_token.json["errcode"] == "M_UNKNOWN_TOKEN"
    assert hs.typing.typing_users(room_id) == []


@pytest_twisted.ensureDeferred
async def test_typing_wakes_a_waiting_sync_of_another_member(server):
    hs, anon = server
    alice = await anon.register("wanda")
    bob = await anon.register("will")
    room_id = await shared_room(alice, bob)
    _, since = await sections_sync(hs, bob.user_id)
    waiting = await long_poll(hs, bob.user_id, since)
    await task.deferLater(reactor, 0.05, lambda: None)
    assert not waiting.called
    assert (await alice.put(typing_path(room_id, alice.user_id), {"typing": True})).code == 200
    response, waited = await waiting
    assert waited < 5
    assert room_ephemeral(response, room_id, "m.typing")[0]["content"]["user_ids"] == [
        alice.user_id
    ]
