"""Account data (global and per room) and room tags over HTTP, and the
account_data /sync section."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor, task

from tests.api.sync_sections_helper import (
    global_account_data,
    long_poll,
    room_account_data,
    sections_sync,
    shared_room,
)
from tests.support.client import q

V3 = "/_matrix/client/v3"


def global_path(user_id: str, data_type: str) -> str:
    return f"{V3}/user/{q(user_id)}/account_data/{q(data_type)}"


def room_path(user_id: str, room_id: str, data_type: str) -> str:
    return f"{V3}/user/{q(user_id)}/rooms/{q(room_id)}/account_data/{q(data_type)}"


def tags_path(user_id: str, room_id: str, tag: str | None = None) -> str:
    path = f"{V3}/user/{q(user_id)}/rooms/{q(room_id)}/tags"
    return path if tag is None else f"{path}/{q(tag)}"


@pytest_twisted.ensureDeferred
async def test_global_and_room_account_data_round_trip_and_sync(server):
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await shared_room(alice)
    other_room = await shared_room(alice)

    missing = await alice.get(global_path(alice.user_id, "org.example.cfg"))
    assert missing.code == 404 and missing.json["errcode"] == "M_NOT_FOUND"
    missing_room = await alice.get(room_path(alice.user_id, room_id, "org.example.cfg"))
    assert missing_room.code == 404 and missing_room.json["errcode"] == "M_NOT_FOUND"

    assert (await alice.put(global_path(alice.user_id, "org.example.cfg"), {"a": 1})).code == 200
    assert (
        await alice.put(room_path(alice.user_id, room_id, "org.example.r"), {"b": 2})
    ).code == 200
    assert (await alice.get(global_path(alice.user_id, "org.example.cfg"))).json == {"a": 1}
    assert (await alice.get(room_path(alice.user_id, room_id, "org.example.r"))).json == {"b": 2}
    # Room account data does not fall back to global data and vice versa.
    assert (await alice.get(global_path(alice.user_id, "org.example.r"))).code == 404
    assert (await alice.get(room_path(alice.user_id, other_room, "org.example.r"))).code == 404

    initial, since = await sections_sync(hs, alice.user_id)
    top = global_account_data(initial)
    assert top["org.example.cfg"] == {"a": 1}
    # Clients need their push rules from the first sync on.
    assert top["m.push_rules"]["global"]["override"][0]["rule_id"] == ".m.rule.master"
    assert room_account_data(initial, room_id) == {"org.example.r": {"b": 2}}

    quiet, _ = await sections_sync(hs, alice.user_id, since)
    assert quiet == {}

    assert (await alice.put(global_path(alice.user_id, "org.example.cfg"), {"a": 3})).code == 200
    assert (
        await alice.put(room_path(alice.user_id, other_room, "org.example.r"), {"c": 4})
    ).code == 200
    changed, _ = await sections_sync(hs, alice.user_id, since)
    assert global_account_data(changed) == {"org.example.cfg": {"a": 3}}
    assert room_account_data(changed, other_room) == {"org.example.r": {"c": 4}}
    assert room_account_data(changed, room_id) == {}


@pytest_twisted.ensureDeferred
async def test_account_data_refusals(server):
    hs, anon = server
    alice = await anon.register("amy")
    bob = await anon.register("bert")
    room_id = await shared_room(alice)

    cases = [
        ("PUT", global_path(bob.user_id, "x.y"), {"a": 1}, 403, "M_FORBIDDEN"),
        ("GET", global_path(bob.user_id, "x.y"), None, 403, "M_FORBIDDEN"),
        ("PUT", room_path(bob.user_id, room_id, "x.y"), {"a": 1}, 403, "M_FORBIDDEN"),
        ("GET", room_path(bob.user_id, room_id, "x.y"), None, 403, "M_FORBIDDEN"),
        # Server-managed types are refused with 405 M_BAD_JSON (spec "Client Config").
        ("PUT", global_path(alice.user_id, "m.fully_read"), {"event_id": "$x"}, 405, "M_BAD_JSON"),
        ("PUT", global_path(alice.user_id, "m.push_rules"), {}, 405, "M_BAD_JSON"),
        (
            "PUT",
            room_path(alice.user_id, room_id, "m.fully_read"),
            {"event_id": "$x"},
            405,
            "M_BAD_JSON",
        ),
        ("PUT", room_path(alice.user_id, room_id, "m.push_rules"), {}, 405, "M_BAD_JSON"),
        ("PUT", room_path(alice.user_id, "not-a-room", "x.y"), {}, 400, "M_INVALID_PARAM"),
        ("GET", room_path(alice.user_id, "not-a-room", "x.y"), None, 400, "M_INVALID_PARAM"),
        ("PUT", global_path(alice.user_id, "x.y"), [1], 400, "M_BAD_JSON"),
        ("PUT", global_path(alice.user_id, "x.y"), "text", 400, "M_BAD_JSON"),
        ("PUT", global_path(alice.user_id, "x" * 300), {}, 400, "M_INVALID_PARAM"),
    ]
    for method, path, body, code, errcode in cases:
        resp = await alice.request(method, path, body)
        assert (resp.code, resp.json["errcode"]) == (code, errcode), (method, path, resp)
    not_json = await alice.request("PUT", global_path(alice.user_id, "x.y"), raw=b"nope")
    assert not_json.code == 400 and not_json.json["errcode"] == "M_NOT_JSON"
    no_token = await alice.get(global_path(alice.user_id, "x.y"), token=False)
    assert no_token.code == 401 and no_token.json["errcode"] == "M_MISSING_TOKEN"
    # m.push_rules is readable like any account data.
    rules = await alice.get(global_path(alice.user_id, "m.push_rules"))
    assert rules.code == 200 and "underride" in rules.json["global"]
    assert (await hs.account_data_store.get_account_data_for_user(alice.user_id)).global_data == {}


@pytest_twisted.ensureDeferred
async def test_room_tags(server):
    hs, anon = server
    alice = await anon.register("tia")
    room_id = await shared_room(alice)
    _, since = await sections_sync(hs, alice.user_id)

    empty = await alice.get(tags_path(alice.user_id, room_id))
    assert empty.code == 200 and empty.json == {"tags": {}}
    assert (
        await alice.put(tags_path(alice.user_id, room_id, "m.favourite"), {"order": 0.25})
    ).code == 200
    assert (await alice.put(tags_path(alice.user_id, room_id, "u.work"), {})).code == 200
    listed = await alice.get(tags_path(alice.user_id, room_id))
    assert listed.json == {"tags": {"m.favourite": {"order": 0.25}, "u.work": {}}}

    synced, since = await sections_sync(hs, alice.user_id, since)
    assert room_account_data(synced, room_id)["m.tag"] == listed.json

    assert (await alice.delete(tags_path(alice.user_id, room_id, "u.work"))).code == 200
    # Deleting a tag that is not there is fine and changes nothing.
    token = hs.current_token().account_data
    assert (await alice.delete(tags_path(alice.user_id, room_id, "u.none"))).code == 200
    assert hs.current_token().account_data == token
    after = await alice.get(room_path(alice.user_id, room_id, "m.tag"))
    assert after.json == {"tags": {"m.favourite": {"order": 0.25}}}
    synced, _ = await sections_sync(hs, alice.user_id, since)
    assert room_account_data(synced, room_id)["m.tag"] == {"tags": {"m.favourite": {"order": 0.25}}}

    bob = await anon.register("tob")
    for method, path, body, code, errcode in [
        ("PUT", tags_path(alice.user_id, room_id, "u.x"), {"order": "first"}, 400, "M_BAD_JSON"),
        ("PUT", tags_path(alice.user_id, room_id, "u." + "x" * 300), {}, 400, "M_INVALID_PARAM"),
        ("PUT", tags_path(alice.user_id, room_id, "u.x"), [], 400, "M_BAD_JSON"),
        ("PUT", tags_path(alice.user_id, "nope", "u.x"), {}, 400, "M_INVALID_PARAM"),
        ("GET", tags_path(alice.user_id, room_id), None, 403, "M_FORBIDDEN"),
        ("DELETE", tags_path(alice.user_id, room_id, "m.favourite"), None, 403, "M_FORBIDDEN"),
    ]:
        client = bob if code == 403 else alice
        resp = await client.request(method, path, body)
        assert (resp.code, resp.json["errcode"]) == (code, errcode), (method, path, resp)
    assert (await alice.get(tags_path(alice.user_id, room_id))).json == {
        "tags": {"m.favourite": {"order": 0.25}}
    }


@pytest_twisted.ensureDeferred
async def test_account_data_change_wakes_the_users_waiting_sync(server):
    hs, anon = server
    alice = await anon.register("wes")
    _, since = await sections_sync(hs, alice.user_id)
    waiting = await long_poll(hs, alice.user_id, since)
    await task.deferLater(reactor, 0.05, lambda: None)
    assert not waiting.called
    assert (await alice.put(global_path(alice.user_id, "org.example.w"), {"w": 1})).code == 200
    response, waited = await waiting
    assert waited < 5
    assert global_account_data(response) == {"org.example.w": {"w": 1}}


class TypesFilter:
    """A stand-in for the sync filter: keeps only events of ``types``."""

    def __init__(self, types: set[str]) -> None:
        self.types = types

    def _keep(self, events):
        return [e for e in events if e["type"] in self.types]

    filter_account_data = filter_room_account_data = filter_presence = _keep
    filter_room_ephemeral = _keep


@pytest_twisted.ensureDeferred
async def test_sections_apply_the_sync_filter(server):
    hs, anon = server
    alice = await anon.register("fay")
    room_id = await shared_room(alice)
    assert (await alice.put(global_path(alice.user_id, "org.keep"), {"k": 1})).code == 200
    assert (await alice.put(global_path(alice.user_id, "org.drop"), {"d": 1})).code == 200
    assert (await alice.put(room_path(alice.user_id, room_id, "org.drop"), {"d": 2})).code == 200
    filtered, _ = await sections_sync(hs, alice.user_id, sync_filter=TypesFilter({"org.keep"}))
    assert global_account_data(filtered) == {"org.keep": {"k": 1}}
    # A room whose only data was filtered away is not added to the response.
    assert room_id not in filtered.get("rooms", {}).get("join", {})
