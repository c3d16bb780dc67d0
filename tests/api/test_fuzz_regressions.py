"""Regressions for the 500s that fuzzing the client-server API found.

Each test pins one fix: the request that used to crash now gets a Matrix
error (or, for concurrent retries, the idempotent answer).
"""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import defer

from tests.support.client import JsonClient, q

V3 = "/_matrix/client/v3"


async def _room(client: JsonClient) -> str:
    created = await client.post(f"{V3}/createRoom", {})
    assert created.code == 200, created
    return created.json["room_id"]


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest_twisted.ensureDeferred
async def test_unrepresentable_json_is_m_not_json_everywhere(server):
    """A lone surrogate escape or a number that overflows a float used to pass
    the body parser and crash later (UTF-8 encoding, canonical JSON): 500."""
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await _room(alice)
    me = q(alice.user_id or "")
    targets = [
        ("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/t1"),
        ("PUT", f"{V3}/rooms/{q(room_id)}/state/m.room.topic"),
        ("PUT", f"{V3}/user/{me}/account_data/org.example.x"),
        ("PUT", f"{V3}/user/{me}/rooms/{q(room_id)}/tags/u.work"),
        ("POST", f"{V3}/user/{me}/filter"),
    ]
    for raw in (b'{"body": "\\ud800"}', b'{"\\udfff": 1}', b'{"body": 1e400}'):
        for method, path in targets:
            resp = await alice.request(method, path, raw=raw)
            assert resp.code == 400, (method, path, raw, resp)
            assert resp.json["errcode"] == "M_NOT_JSON", resp
    # A paired surrogate escape is an ordinary character and still accepted.
    ok = await alice.request(
        "PUT", targets[0][1].replace("t1", "t2"), raw=b'{"body": "\\ud83d\\ude00"}'
    )
    assert ok.code == 200, ok


@pytest_twisted.ensureDeferred
async def test_deeply_nested_body_is_m_bad_json_not_a_crash(server):
    """JSON several hundred levels deep parses, but copying the event content
    recursed past Python's stack limit: 500. Now over 100 levels is refused."""
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await _room(alice)
    path = f"{V3}/rooms/{q(room_id)}/send/m.room.message"
    for depth in (101, 900, 10_000):
        resp = await alice.request(
            "PUT", f"{path}/deep{depth}", raw=b'{"a":' * depth + b"{}" + b"}" * depth
        )
        assert resp.code == 400 and resp.json["errcode"] == "M_BAD_JSON", (depth, resp)
    fine = await alice.put(f"{path}/deep-ok", _nested(99))
    assert fine.code == 200, fine
    stored = await hs.stores.events.get_event(fine.json["event_id"])
    assert json.dumps(stored.content).count("{") == 100


@pytest_twisted.ensureDeferred
async def test_create_room_with_non_string_preset_or_visibility_is_bad_json(server):
    """``"preset": ["x"]`` was looked up in a dict: TypeError (unhashable), 500."""
    hs, anon = server
    alice = await anon.register("alice")
    for body in ({"preset": ["x"]}, {"preset": {"a": 1}}, {"visibility": ["public"]}):
        resp = await alice.post(f"{V3}/createRoom", body)
        assert resp.code == 400 and resp.json["errcode"] == "M_BAD_JSON", (body, resp)
    assert await hs.stores.members.get_rooms_for_user(alice.user_id) == frozenset()


@pytest_twisted.ensureDeferred
async def test_concurrent_sends_with_one_transaction_id_make_one_event(server):
    """Retries racing the first request with the same transaction ID both
    passed the "already sent?" check; the second hit the unique index of
    event_txn_id: 500. Now they wait for the first and share its answer."""
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await _room(alice)
    path = f"{V3}/rooms/{q(room_id)}/send/m.room.message/same-txn"
    answers = await defer.gatherResults(
        [
            defer.ensureDeferred(alice.put(path, {"msgtype": "m.text", "body": f"try {i}"}))
            for i in range(8)
        ]
    )
    assert [a.code for a in answers] == [200] * 8, answers
    event_ids = {a.json["event_id"] for a in answers}
    assert len(event_ids) == 1
    messages = await alice.get(f"{V3}/rooms/{q(room_id)}/messages", query={"dir": "b"})
    sent = [e for e in messages.json["chunk"] if e["type"] == "m.room.message"]
    assert [e["event_id"] for e in sent] == list(event_ids)
    # A later retry still gets the same event; a failed first attempt is shared too.
    again = await alice.put(path, {"msgtype": "m.text", "body": "later"})
    assert again.json["event_id"] in event_ids
    denied = await defer.gatherResults(
        [
            defer.ensureDeferred(
                alice.put(f"{V3}/rooms/{q(room_id)}/send/m.room.message/bad", {"n": 1.5})
            )
            for _ in range(3)
        ]
    )
    assert [d.code for d in denied] == [400] * 3, denied
