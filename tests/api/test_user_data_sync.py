"""Typing, receipts, account data, push rules and presence through GET /sync:
initial syncs, incremental long-polls woken by each kind of change, and
filters."""

from __future__ import annotations

import json
import time

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.api.sync_sections_helper import shared_room
from tests.support.client import JsonClient, q

# The sections are tested directly elsewhere; this file needs GET /sync.
pytest.importorskip("atrium.sync.handler")

V3 = "/_matrix/client/v3"


async def sync(client: JsonClient, **params) -> dict:
    query = {k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in params.items()}
    resp = await client.get(f"{V3}/sync", query=query)
    assert resp.code == 200, resp
    return resp.json


def account_data(body: dict) -> dict:
    return {e["type"]: e["content"] for e in body.get("account_data", {}).get("events", [])}


def room_part(body: dict, room_id: str, part: str) -> dict:
    entry = body.get("rooms", {}).get("join", {}).get(room_id, {})
    return {e["type"]: e["content"] for e in entry.get(part, {}).get("events", [])}


def presence(body: dict) -> dict:
    return {e["sender"]: e["content"] for e in body.get("presence", {}).get("events", [])}


@pytest_twisted.ensureDeferred
async def test_initial_sync_carries_every_user_data_section(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    room_id = await shared_room(alice, bob)
    sent = await bob.put(f"{V3}/rooms/{q(room_id)}/send/m.room.message/1", {"body": "hi"})
    event_id = sent.json["event_id"]
    me = q(alice.user_id)
    assert (await alice.put(f"{V3}/user/{me}/account_data/org.example", {"x": 1})).code == 200
    assert (await alice.put(f"{V3}/user/{me}/rooms/{q(room_id)}/tags/m.favourite", {})).code == 200
    assert (
        await alice.post(f"{V3}/rooms/{q(room_id)}/receipt/m.read/{q(event_id)}", {})
    ).code == 200
    assert (
        await bob.put(f"{V3}/rooms/{q(room_id)}/typing/{q(bob.user_id)}", {"typing": True})
    ).code == 200
    assert (
        await bob.put(f"{V3}/presence/{q(bob.user_id)}/status", {"presence": "online"})
    ).code == 200

    body = await sync(alice)
    top = account_data(body)
    assert top["org.example"] == {"x": 1}
    assert top["m.push_rules"]["global"]["override"][0]["rule_id"] == ".m.rule.master"
    assert room_part(body, room_id, "account_data")["m.tag"] == {"tags": {"m.favourite": {}}}
    ephemeral = room_part(body, room_id, "ephemeral")
    assert ephemeral["m.typing"] == {"user_ids": [bob.user_id]}
    assert alice.user_id in ephemeral["m.receipt"][event_id]["m.read"]
    assert presence(body)[bob.user_id]["presence"] == "online"


@pytest_twisted.ensureDeferred
async def test_incremental_syncs_wake_for_each_change_and_carry_only_it(server):
    hs, anon = server
    alice = await anon.register("ann")
    bob = await anon.register("ben")
    room_id = await shared_room(alice, bob)
    sent = await bob.put(f"{V3}/rooms/{q(room_id)}/send/m.room.message/1", {"body": "hi"})
    event_id = sent.json["event_id"]
    since = (await sync(alice))["next_batch"]
    me = q(alice.user_id)

    changes = [
        (bob, "PUT", f"{V3}/rooms/{q(room_id)}/typing/{q(bob.user_id)}", {"typing": True}),
        (bob, "POST", f"{V3}/rooms/{q(room_id)}/receipt/m.read/{q(event_id)}", {}),
        (alice, "PUT", f"{V3}/user/{me}/account_data/org.example", {"y": 2}),
        (alice, "PUT", f"{V3}/pushrules/global/override/.m.rule.master/enabled", {"enabled": True}),
        (bob, "PUT", f"{V3}/presence/{q(bob.user_id)}/status", {"presence": "unavailable"}),
    ]
    checks = [
        lambda b: room_part(b, room_id, "ephemeral") == {"m.typing": {"user_ids": [bob.user_id]}},
        lambda b: (
            set(room_part(b, room_id, "ephemeral")["m.receipt"][event_id]["m.read"])
            == {bob.user_id}
        ),
        lambda b: account_data(b) == {"org.example": {"y": 2}},
        lambda b: account_data(b)["m.push_rules"]["global"]["override"][0]["enabled"] is True,
        lambda b: presence(b)[bob.user_id]["presence"] == "unavailable",
    ]
    for (client, method, path, body), check in zip(changes, checks, strict=True):
        started = time.monotonic()
        waiting = defer.ensureDeferred(sync(alice, since=since, timeout=10_000))
        resp = await client.request(method, path, body)
        assert resp.code == 200, (path, resp)
        result = await waiting
        assert time.monotonic() - started < 5, path
        assert check(result), (path, result)
        since = result["next_batch"]
    # Nothing new: an immediate incremental sync has none of these sections.
    quiet = await sync(alice, since=since, timeout=0)
    assert "account_data" not in quiet and "presence" not in quiet
    assert room_part(quiet, room_id, "ephemeral") == {}


@pytest_twisted.ensureDeferred
async def test_sync_filter_applies_to_user_data_sections(server):
    hs, anon = server
    alice = await anon.register("fay")
    bob = await anon.register("fred")
    room_id = await shared_room(alice, bob)
    assert (
        await bob.put(f"{V3}/rooms/{q(room_id)}/typing/{q(bob.user_id)}", {"typing": True})
    ).code == 200
    assert (
        await bob.put(f"{V3}/presence/{q(bob.user_id)}/status", {"presence": "online"})
    ).code == 200
    sync_filter = {
        "account_data": {"not_types": ["m.push_rules"]},
        "presence": {"types": []},
        "room": {"ephemeral": {"not_types": ["m.typing"]}},
    }
    body = await sync(alice, filter=sync_filter)
    assert "m.push_rules" not in account_data(body)
    assert presence(body) == {}
    assert "m.typing" not in room_part(body, room_id, "ephemeral")
