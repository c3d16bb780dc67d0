"""Profiles over HTTP, and the join events re-sent after a profile change."""

from __future__ import annotations

import pytest_twisted

from tests.api.sync_sections_helper import shared_room
from tests.support.client import q

V3 = "/_matrix/client/v3"


def field_path(user_id: str, field: str) -> str:
    return f"{V3}/profile/{q(user_id)}/{q(field)}"


async def member_content(hs, room_id: str, user_id: str) -> dict:
    state = await hs.stores.members.get_current_state_ids(room_id)
    event = await hs.stores.events.get_event(state[("m.room.member", user_id)])
    return event.content


@pytest_twisted.ensureDeferred
async def test_profile_read_write_and_member_events_follow(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    room_id = await shared_room(alice, bob)
    lonely_room = await shared_room(alice)

    profile = await anon.get(f"{V3}/profile/{q(alice.user_id)}")
    assert profile.code == 200 and profile.json == {"displayname": "alice"}
    assert (await alice.get(field_path(alice.user_id, "avatar_url"))).code == 404

    put = await alice.put(field_path(alice.user_id, "displayname"), {"displayname": "Alice W"})
    assert put.code == 200 and put.json == {}
    assert (await bob.get(field_path(alice.user_id, "displayname"))).json == {
        "displayname": "Alice W"
    }
    for rid in (room_id, lonely_room):
        content = await member_content(hs, rid, alice.user_id)
        assert content["membership"] == "join" and content["displayname"] == "Alice W"
    assert (await member_content(hs, room_id, bob.user_id))["displayname"] == "bob"

    avatar = "mxc://test.local/abc"
    assert (
        await alice.put(field_path(alice.user_id, "avatar_url"), {"avatar_url": avatar})
    ).code == 200
    assert (await anon.get(f"{V3}/profile/{q(alice.user_id)}")).json == {
        "displayname": "Alice W",
        "avatar_url": avatar,
    }
    assert (await member_content(hs, room_id, alice.user_id))["avatar_url"] == avatar

    # Setting the same value again sends no new member event.
    state_before = await hs.stores.members.get_current_state_ids(room_id)
    assert (
        await alice.put(field_path(alice.user_id, "displayname"), {"displayname": "Alice W"})
    ).code == 200
    state_after = await hs.stores.members.get_current_state_ids(room_id)
    assert (
        state_after[("m.room.member", alice.user_id)]
        == state_before[("m.room.member", alice.user_id)]
    )

    deleted = await alice.delete(field_path(alice.user_id, "avatar_url"))
    assert deleted.code == 200
    assert (await alice.get(field_path(alice.user_id, "avatar_url"))).code == 404
    assert "avatar_url" not in await member_content(hs, room_id, alice.user_id)
    # A null display name clears it too.
    assert (
        await alice.put(field_path(alice.user_id, "displayname"), {"displayname": None})
    ).code == 200
    assert (await anon.get(f"{V3}/profile/{q(alice.user_id)}")).json == {}


@pytest_twisted.ensureDeferred
async def test_profile_refusals_and_bad_input(server):
    hs, anon = server
    alice = await anon.register("pam")
    bob = await anon.register("paul")
    cases = [
        ("PUT", field_path(bob.user_id, "displayname"), {"displayname": "x"}, 403, "M_FORBIDDEN"),
        ("DELETE", field_path(bob.user_id, "displayname"), None, 403, "M_FORBIDDEN"),
        ("PUT", field_path(alice.user_id, "displayname"), {"displayname": 5}, 400, "M_BAD_JSON"),
        (
            "PUT",
            field_path(alice.user_id, "displayname"),
            {"displayname": "x" * 300},
            400,
            "M_INVALID_PARAM",
        ),
        ("PUT", field_path(alice.user_id, "displayname"), {}, 400, "M_MISSING_PARAM"),
        ("PUT", field_path(alice.user_id, "displayname"), ["x"], 400, "M_BAD_JSON"),
        (
            "PUT",
            field_path(alice.user_id, "avatar_url"),
            {"avatar_url": "http://x/y"},
            400,
            "M_INVALID_PARAM",
        ),
        (
            "PUT",
            field_path(alice.user_id, "m.tz"),
            {"m.tz": "Europe/Paris"},
            400,
            "M_INVALID_PARAM",
        ),
        ("PUT", field_path(alice.user_id, "Bad Key"), {"Bad Key": 1}, 400, "M_INVALID_PARAM"),
        ("GET", field_path(alice.user_id, "Bad Key"), None, 400, "M_INVALID_PARAM"),
        ("GET", field_path(alice.user_id, "m.tz"), None, 404, "M_NOT_FOUND"),
        ("GET", f"{V3}/profile/{q('@ghost:test.local')}", None, 404, "M_NOT_FOUND"),
        ("GET", f"{V3}/profile/{q('@someone:elsewhere.example')}", None, 404, "M_NOT_FOUND"),
        ("GET", field_path("@ghost:test.local", "displayname"), None, 404, "M_NOT_FOUND"),
    ]
    for method, path, body, code, errcode in cases:
        resp = await alice.request(method, path, body)
        assert (resp.code, resp.json["errcode"]) == (code, errcode), (method, path, body, resp)
    not_json = await alice.request("PUT", field_path(alice.user_id, "displayname"), raw=b"x")
    assert not_json.code == 400 and not_json.json["errcode"] == "M_NOT_JSON"
    no_token = await alice.put(
        field_path(alice.user_id, "displayname"), {"displayname": "x"}, token=False
    )
    assert no_token.code == 401 and no_token.json["errcode"] == "M_MISSING_TOKEN"
    # Reading needs no token, but a wrong one is still refused.
    bad_token = await alice.get(f"{V3}/profile/{q(alice.user_id)}", token="nonsense")
    assert bad_token.code == 401 and bad_token.json["errcode"] == "M_UNKNOWN_TOKEN"
    assert (await anon.get(f"{V3}/profile/{q(bob.user_id)}")).json == {"displayname": "paul"}
    assert await hs.accounts.get_profile(bob.user_id) == ("paul", None)
    assert await hs.accounts.get_profile(alice.user_id) == ("pam", None)
