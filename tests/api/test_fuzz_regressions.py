"""Regressions for the 500s that fuzzing the client-server API found.

Each test pins one fix: the request that used to crash now gets a Matrix
error (or, for concurrent retries, the idempotent answer).
"""

from __future__ import annotations

import base64
import json
import random

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


# Long, incompressible text: PostgreSQL compresses index entries, so only text
# like this reaches its btree entry limit (about 2.7 kB).
NOISE = base64.urlsafe_b64encode(random.Random(3).randbytes(3300)).decode()


@pytest_twisted.ensureDeferred
async def test_large_filter_is_stored(server):
    """A filter over ~2.7 kB of canonical JSON did not fit the (user_id,
    filter_json) index on PostgreSQL: 500. The index is gone (migration 0090)."""
    hs, anon = server
    alice = await anon.register("alice")
    path = f"{V3}/user/{q(alice.user_id or '')}/filter"
    big = {"room": {"not_rooms": [f"!{NOISE[i : i + 40]}:x" for i in range(0, 4000, 40)]}}
    made = await alice.post(path, big)
    assert made.code == 200, made
    again = await alice.post(path, big)
    assert again.json["filter_id"] == made.json["filter_id"]
    fetched = await alice.get(f"{path}/{made.json['filter_id']}")
    assert fetched.json == big


@pytest_twisted.ensureDeferred
async def test_path_parameters_over_255_bytes_are_invalid_param(server):
    """A 4 kB transaction ID reached the event_txn_id unique index: 500 on
    PostgreSQL. Every path parameter is now capped at 255 bytes, like the
    spec's identifiers."""
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await _room(alice)
    send = f"{V3}/rooms/{q(room_id)}/send/m.room.message"
    body = {"msgtype": "m.text", "body": "hi"}
    for path in (
        f"{send}/{NOISE}",
        f"{V3}/rooms/{q(room_id)}/send/{NOISE}/t1",
        f"{V3}/user/{q(alice.user_id or '')}/account_data/{NOISE}",
        f"{V3}/sendToDevice/m.x/{NOISE}",
        f"{V3}/pushrules/global/override/{NOISE}",
    ):
        resp = await alice.put(path, body)
        assert resp.code == 400 and resp.json["errcode"] == "M_INVALID_PARAM", (path[:80], resp)
    ok = await alice.put(f"{send}/{'t' * 255}", body)
    assert ok.code == 200, ok


@pytest_twisted.ensureDeferred
async def test_over_long_identifiers_in_bodies_are_refused(server):
    """Client-chosen identifiers in bodies (receipt thread IDs, alias
    localparts, E2EE key IDs and device IDs) went straight into index keys."""
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await _room(alice)
    sent = await alice.put(
        f"{V3}/rooms/{q(room_id)}/send/m.room.message/m1", {"msgtype": "m.text", "body": "x"}
    )
    receipt = await alice.post(
        f"{V3}/rooms/{q(room_id)}/receipt/m.read/{q(sent.json['event_id'])}",
        {"thread_id": NOISE},
    )
    assert receipt.code == 400 and receipt.json["errcode"] == "M_INVALID_PARAM", receipt
    rooms_before = await hs.stores.members.get_rooms_for_user(alice.user_id)
    created = await alice.post(f"{V3}/createRoom", {"room_alias_name": NOISE})
    assert created.code == 400 and created.json["errcode"] == "M_INVALID_PARAM", created
    # Refused before any event was made: no half-created room.
    assert await hs.stores.members.get_rooms_for_user(alice.user_id) == rooms_before
    upload = await alice.post(f"{V3}/keys/upload", {"one_time_keys": {f"curve25519:{NOISE}": "k"}})
    assert upload.code == 400 and upload.json["errcode"] == "M_BAD_JSON", upload
    to_device = await alice.put(
        f"{V3}/sendToDevice/m.x/td1", {"messages": {alice.user_id: {NOISE: {"a": 1}}}}
    )
    assert to_device.code == 400, to_device


@pytest_twisted.ensureDeferred
async def test_nul_and_over_long_text_in_account_fields_are_refused(server):
    """Display names and status messages with NUL made PostgreSQL refuse the
    write (500); a 4 kB device ID at login did not fit the devices key."""
    hs, anon = server
    alice = await anon.register("alice", password="pw-alice")
    me = q(alice.user_id or "")
    for method, path, body in (
        ("PUT", f"{V3}/profile/{me}/displayname", {"displayname": "a\x00b"}),
        ("PUT", f"{V3}/devices/{q(alice.device_id or '')}", {"display_name": "a\x00b"}),
        ("PUT", f"{V3}/presence/{me}/status", {"presence": "online", "status_msg": "a\x00b"}),
    ):
        resp = await alice.request(method, path, body)
        assert resp.code == 400 and resp.json["errcode"] == "M_INVALID_PARAM", (path, resp)
    ident = {"type": "m.id.user", "user": "alice"}
    for extra in (
        {"device_id": NOISE},
        {"device_id": "d\x00"},
        {"initial_device_display_name": NOISE},
    ):
        login = await anon.post(
            f"{V3}/login",
            {"type": "m.login.password", "identifier": ident, "password": "pw-alice", **extra},
            token=False,
        )
        assert login.code == 400, (extra, login)
    presence = await alice.put(f"{V3}/presence/{me}/status", {"presence": ["online"]})
    assert presence.code == 400, presence
    # The account and its session are intact.
    assert (await alice.get(f"{V3}/account/whoami")).code == 200
    fine = await anon.post(
        f"{V3}/login",
        {
            "type": "m.login.password",
            "identifier": ident,
            "password": "pw-alice",
            "device_id": "D2",
        },
        token=False,
    )
    assert fine.code == 200 and fine.json["device_id"] == "D2", fine
