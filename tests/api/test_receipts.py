"""Receipts and read markers over HTTP, and the m.receipt /sync section."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor, task

from tests.api.sync_sections_helper import (
    long_poll,
    room_account_data,
    room_ephemeral,
    sections_sync,
    shared_room,
)
from tests.support.client import q

V3 = "/_matrix/client/v3"


async def send(client, room_id: str, body: str) -> str:
    resp = await client.put(
        f"{V3}/rooms/{q(room_id)}/send/m.room.message/{body}", {"msgtype": "m.text", "body": body}
    )
    assert resp.code == 200, resp
    return resp.json["event_id"]


def receipt_path(room_id: str, receipt_type: str, event_id: str) -> str:
    return f"{V3}/rooms/{q(room_id)}/receipt/{receipt_type}/{q(event_id)}"


def receipt_content(response, room_id):
    events = room_ephemeral(response, room_id, "m.receipt")
    assert len(events) <= 1, "receipts are batched into one event per room"
    return events[0]["content"] if events else {}


@pytest_twisted.ensureDeferred
async def test_public_receipts_reach_members_private_ones_only_their_owner(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    room_id = await shared_room(alice, bob)
    first = await send(alice, room_id, "one")
    _, alice_since = await sections_sync(hs, alice.user_id)
    _, bob_since = await sections_sync(hs, bob.user_id)

    read = await bob.post(receipt_path(room_id, "m.read", first), {})
    assert read.code == 200 and read.json == {}
    seen, alice_since = await sections_sync(hs, alice.user_id, alice_since)
    content = receipt_content(seen, room_id)
    assert list(content) == [first]
    assert set(content[first]["m.read"]) == {bob.user_id}
    assert isinstance(content[first]["m.read"][bob.user_id]["ts"], int)

    second = await send(alice, room_id, "two")
    private = await bob.post(receipt_path(room_id, "m.read.private", second), {})
    assert private.code == 200
    hidden, alice_since = await sections_sync(hs, alice.user_id, alice_since)
    assert receipt_content(hidden, room_id) == {}
    own, _ = await sections_sync(hs, bob.user_id, bob_since)
    own_content = receipt_content(own, room_id)
    assert set(own_content[second]) == {"m.read.private"}
    assert own_content[first]["m.read"][bob.user_id]["ts"] > 0

    # An initial sync carries every current receipt of the room (still no private ones
    # of others).
    initial, _ = await sections_sync(hs, alice.user_id)
    assert receipt_content(initial, room_id) == {
        first: {"m.read": {bob.user_id: content[first]["m.read"][bob.user_id]}}
    }


@pytest_twisted.ensureDeferred
async def test_threaded_receipt_and_receipts_never_move_backwards(server):
    hs, anon = server
    alice = await anon.register("tess")
    room_id = await shared_room(alice)
    older = await send(alice, room_id, "older")
    newer = await send(alice, room_id, "newer")

    threaded = await alice.post(receipt_path(room_id, "m.read", older), {"thread_id": "main"})
    assert threaded.code == 200
    stored = await hs.receipts_store.get_receipt(room_id, "m.read", alice.user_id, "main")
    assert stored.event_id == older and stored.data["thread_id"] == "main"

    assert (await alice.post(receipt_path(room_id, "m.read", newer))).code == 200
    token = hs.current_token().receipts
    back = await alice.post(receipt_path(room_id, "m.read", older), {})
    assert back.code == 200
    unthreaded = await hs.receipts_store.get_receipt(room_id, "m.read", alice.user_id)
    assert unthreaded.event_id == newer
    assert hs.current_token().receipts == token


@pytest_twisted.ensureDeferred
async def test_read_markers_set_fully_read_and_receipts(server):
    hs, anon = server
    alice = await anon.register("rita")
    room_id = await shared_room(alice)
    first = await send(alice, room_id, "a")
    second = await send(alice, room_id, "b")
    _, since = await sections_sync(hs, alice.user_id)

    marked = await alice.post(
        f"{V3}/rooms/{q(room_id)}/read_markers",
        {"m.fully_read": second, "m.read": second, "m.read.private": first},
    )
    assert marked.code == 200, marked
    got = await alice.get(
        f"{V3}/user/{q(alice.user_id)}/rooms/{q(room_id)}/account_data/m.fully_read"
    )
    assert got.code == 200 and got.json == {"event_id": second}
    synced, since = await sections_sync(hs, alice.user_id, since)
    assert room_account_data(synced, room_id)["m.fully_read"] == {"event_id": second}
    content = receipt_content(synced, room_id)
    assert alice.user_id in content[second]["m.read"]
    assert alice.user_id in content[first]["m.read.private"]

    # The fully read marker does not move back; the receipt endpoint can set it too.
    back = await alice.post(f"{V3}/rooms/{q(room_id)}/read_markers", {"m.fully_read": first})
    assert back.code == 200
    assert (
        await hs.account_data_store.get_account_data_by_type(alice.user_id, room_id, "m.fully_read")
    ) == {"event_id": second}
    third = await send(alice, room_id, "c")
    via_receipt = await alice.post(receipt_path(room_id, "m.fully_read", third), {})
    assert via_receipt.code == 200
    assert (
        await hs.account_data_store.get_account_data_by_type(alice.user_id, room_id, "m.fully_read")
    ) == {"event_id": third}


@pytest_twisted.ensureDeferred
async def test_receipt_refusals_and_bad_input(server):
    hs, anon = server
    alice = await anon.register("ria")
    outsider = await anon.register("otto")
    room_id = await shared_room(alice)
    other_room = await shared_room(outsider)
    event_id = await send(alice, room_id, "x")
    elsewhere = await send(outsider, other_room, "y")

    cases = [
        (alice, receipt_path(room_id, "m.unknown", event_id), {}, 400, "M_INVALID_PARAM"),
        (
            alice,
            receipt_path(room_id, "m.read", event_id),
            {"thread_id": ""},
            400,
            "M_INVALID_PARAM",
        ),
        (
            alice,
            receipt_path(room_id, "m.read", event_id),
            {"thread_id": 7},
            400,
            "M_INVALID_PARAM",
        ),
        (
            alice,
            receipt_path(room_id, "m.fully_read", event_id),
            {"thread_id": "main"},
            400,
            "M_INVALID_PARAM",
        ),
        (alice, receipt_path(room_id, "m.read", "$missing:test.local"), {}, 404, "M_NOT_FOUND"),
        (alice, receipt_path(room_id, "m.read", elsewhere), {}, 404, "M_NOT_FOUND"),
        (alice, receipt_path(room_id, "m.read", "not-an-event"), {}, 400, "M_INVALID_PARAM"),
        (alice, receipt_path("bad-room", "m.read", event_id), {}, 400, "M_INVALID_PARAM"),
        (outsider, receipt_path(room_id, "m.read", event_id), {}, 403, "M_FORBIDDEN"),
        (alice, f"{V3}/rooms/{q(room_id)}/read_markers", {"m.fully_read": 5}, 400, "M_BAD_JSON"),
        (
            alice,
            f"{V3}/rooms/{q(room_id)}/read_markers",
            {"m.read": "$nope:test.local"},
            404,
            "M_NOT_FOUND",
        ),
        (alice, f"{V3}/rooms/{q(room_id)}/read_markers", [], 400, "M_BAD_JSON"),
        (
            outsider,
            f"{V3}/rooms/{q(room_id)}/read_markers",
            {"m.fully_read": event_id},
            403,
            "M_FORBIDDEN",
        ),
    ]
    for client, path, body, code, errcode in cases:
        resp = await client.post(path, body)
        assert (resp.code, resp.json["errcode"]) == (code, errcode), (path, body, resp)
    not_json = await alice.request("POST", receipt_path(room_id, "m.read", event_id), raw=b"\xff")
    assert not_json.code == 400 and not_json.json["errcode"] == "M_NOT_JSON"
    no_token = await alice.post(receipt_path(room_id, "m.read", event_id), {}, token=False)
    assert no_token.code == 401 and no_token.json["errcode"] == "M_MISSING_TOKEN"
    # Nothing was stored by any of the refused requests.
    assert (
        await hs.receipts_store.get_receipts_for_rooms([room_id], 0, hs.current_token().receipts)
        == []
    )


@pytest_twisted.ensureDeferred
async def test_public_receipt_wakes_room_members_private_one_does_not(server):
    hs, anon = server
    alice = await anon.register("wren")
    bob = await anon.register("wade")
    room_id = await shared_room(alice, bob)
    event_id = await send(alice, room_id, "hello")
    _, since = await sections_sync(hs, alice.user_id)

    waiting = await long_poll(hs, alice.user_id, since, timeout_ms=10_000)
    assert (await bob.post(receipt_path(room_id, "m.read.private", event_id), {})).code == 200
    await task.deferLater(reactor, 0.2, lambda: None)
    assert not waiting.called
    assert (await bob.post(receipt_path(room_id, "m.read", event_id), {})).code == 200
    response, waited = await waiting
    assert waited < 5
    assert set(receipt_content(response, room_id)[event_id]) == {"m.read"}
