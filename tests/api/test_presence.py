"""Presence over HTTP and the presence /sync section."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor, task

from tests.api.sync_sections_helper import long_poll, sections_sync, shared_room
from tests.support.client import q

V3 = "/_matrix/client/v3"


def status_path(user_id: str) -> str:
    return f"{V3}/presence/{q(user_id)}/status"


def presence_by_user(response) -> dict:
    return {e["sender"]: e["content"] for e in response.get("presence", {}).get("events", [])}


@pytest_twisted.ensureDeferred
async def test_presence_set_read_and_synced_to_room_peers(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    stranger = await anon.register("sam")

    # Never set: offline, not an error.
    unset = await alice.get(status_path(alice.user_id))
    assert unset.code == 200 and unset.json == {"presence": "offline"}

    room_id = await shared_room(alice, bob)
    assert room_id
    _, bob_since = await sections_sync(hs, bob.user_id)
    put = await alice.put(status_path(alice.user_id), {"presence": "online", "status_msg": "here"})
    assert put.code == 200 and put.json == {}
    own = await alice.get(status_path(alice.user_id))
    assert own.json["presence"] == "online" and own.json["status_msg"] == "here"
    assert 0 <= own.json["last_active_ago"] < 60_000 and own.json["currently_active"] is True
    peer = await bob.get(status_path(alice.user_id))
    assert peer.code == 200 and peer.json["presence"] == "online"
    hidden = await stranger.get(status_path(alice.user_id))
    assert hidden.code == 403 and hidden.json["errcode"] == "M_FORBIDDEN"

    changed, bob_since = await sections_sync(hs, bob.user_id, bob_since)
    assert presence_by_user(changed)[alice.user_id]["presence"] == "online"
    assert presence_by_user(changed)[alice.user_id]["status_msg"] == "here"
    quiet, _ = await sections_sync(hs, bob.user_id, bob_since)
    assert quiet == {}
    # Someone sharing no room with alice never hears of her presence.
    stranger_sync, _ = await sections_sync(hs, stranger.user_id)
    assert alice.user_id not in presence_by_user(stranger_sync)

    assert (await alice.put(status_path(alice.user_id), {"presence": "unavailable"})).code == 200
    away, _ = await sections_sync(hs, bob.user_id, bob_since)
    content = presence_by_user(away)[alice.user_id]
    assert content["presence"] == "unavailable" and "status_msg" not in content
    assert "currently_active" not in content
    initial, _ = await sections_sync(hs, bob.user_id)
    assert presence_by_user(initial)[alice.user_id]["presence"] == "unavailable"


@pytest_twisted.ensureDeferred
async def test_presence_refusals_and_bad_input(server):
    hs, anon = server
    alice = await anon.register("pia")
    bob = await anon.register("pete")
    cases = [
        ("PUT", status_path(bob.user_id), {"presence": "online"}, 403, "M_FORBIDDEN"),
        ("PUT", status_path(alice.user_id), {"presence": "asleep"}, 400, "M_INVALID_PARAM"),
        ("PUT", status_path(alice.user_id), {}, 400, "M_MISSING_PARAM"),
        (
            "PUT",
            status_path(alice.user_id),
            {"presence": "online", "status_msg": 3},
            400,
            "M_BAD_JSON",
        ),
        (
            "PUT",
            status_path(alice.user_id),
            {"presence": "online", "status_msg": "x" * 2000},
            400,
            "M_INVALID_PARAM",
        ),
        ("PUT", status_path(alice.user_id), [], 400, "M_BAD_JSON"),
        ("GET", status_path("@ghost:test.local"), None, 404, "M_NOT_FOUND"),
        ("GET", status_path("@someone:elsewhere.example"), None, 404, "M_NOT_FOUND"),
        ("GET", status_path("not a user"), None, 404, "M_NOT_FOUND"),
    ]
    for method, path, body, code, errcode in cases:
        resp = await alice.request(method, path, body)
        assert (resp.code, resp.json["errcode"]) == (code, errcode), (method, path, body, resp)
    not_json = await alice.request("PUT", status_path(alice.user_id), raw=b"[")
    assert not_json.code == 400 and not_json.json["errcode"] == "M_NOT_JSON"
    no_token = await alice.get(status_path(alice.user_id), token=False)
    assert no_token.code == 401 and no_token.json["errcode"] == "M_MISSING_TOKEN"
    assert await hs.presence_store.get_presence_for_user(alice.user_id) is None


@pytest_twisted.ensureDeferred
async def test_presence_change_wakes_room_peers(server):
    hs, anon = server
    alice = await anon.register("wynn")
    bob = await anon.register("walt")
    await shared_room(alice, bob)
    _, since = await sections_sync(hs, bob.user_id)
    waiting = await long_poll(hs, bob.user_id, since)
    await task.deferLater(reactor, 0.05, lambda: None)
    assert not waiting.called
    assert (await alice.put(status_path(alice.user_id), {"presence": "online"})).code == 200
    response, waited = await waiting
    assert waited < 5
    assert presence_by_user(response)[alice.user_id]["presence"] == "online"
