"""Send-to-device over HTTP: delivery through the /sync section exactly once,
idempotent transaction IDs, the `*` wildcard, the per-response limit, waking
long-polls, and inboxes dropped with their device."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer

from atrium.sync.e2ee import ToDeviceSection
from tests.support.client import q
from tests.support.e2ee import V3, TestDevice, login, run_section, section_of, upload


async def send(client, txn_id, messages, event_type="m.test"):
    resp = await client.put(
        f"{V3}/sendToDevice/{q(event_type)}/{q(txn_id)}", {"messages": messages}
    )
    assert resp.code == 200, resp
    return resp


async def inbox_size(hs, user_id, device_id=None):
    sql = "SELECT COUNT(*) FROM device_inbox WHERE user_id = ?"
    args = [user_id]
    if device_id is not None:
        sql += " AND device_id = ?"
        args.append(device_id)
    return (await hs.db.execute("test_inbox_size", sql, *args))[0][0]


@pytest_twisted.ensureDeferred
async def test_messages_are_delivered_once_and_deleted_when_acknowledged(server):
    hs, anon = server
    alice = await anon.register("alice")
    alice2 = await login(anon, "alice")
    bob = await anon.register("bob")
    section = section_of(hs, ToDeviceSection)
    start = hs.current_token()

    await send(
        bob,
        "t1",
        {
            alice.user_id: {alice.device_id: {"n": 1}, "UNKNOWNDEVICE": {"n": 0}},
            "@zed:remote.example": {"ZDEV": {"n": 9}},
        },
    )
    # A retry of the same transaction is not delivered twice.
    await send(bob, "t1", {alice.user_id: {alice.device_id: {"n": 1}}})
    # `*` reaches every device of the user.
    await send(bob, "t2", {alice.user_id: {"*": {"n": 2}}}, event_type="m.other")

    now = hs.current_token()
    assert now.to_device > start.to_device
    first, _ = await run_section(section, alice, start, now)
    assert first["to_device"]["events"] == [
        {"sender": bob.user_id, "type": "m.test", "content": {"n": 1}},
        {"sender": bob.user_id, "type": "m.other", "content": {"n": 2}},
    ]
    other, _ = await run_section(section, alice2, None, now)
    assert other["to_device"]["events"] == [
        {"sender": bob.user_id, "type": "m.other", "content": {"n": 2}}
    ]
    # Until acknowledged, a repeated /sync from the same token sees them again.
    again, _ = await run_section(section, alice, start, now)
    assert len(again["to_device"]["events"]) == 2
    # The next /sync (since = the previous next_batch) acknowledges and deletes them.
    assert await inbox_size(hs, alice.user_id, alice.device_id) == 2
    later, _ = await run_section(section, alice, now, hs.current_token())
    assert later == {}
    assert await inbox_size(hs, alice.user_id, alice.device_id) == 0
    assert await inbox_size(hs, alice.user_id, alice2.device_id) == 1
    # Even an initial sync does not bring acknowledged messages back.
    initial, _ = await run_section(section, alice, None, hs.current_token())
    assert initial == {}

    # The remote recipient's message is queued for federation.
    outbox = await hs.db.execute(
        "test_outbox", "SELECT destination, sender, message_type FROM device_federation_outbox"
    )
    assert outbox == [("remote.example", bob.user_id, "m.test")]
    # The to_device stream replays both recipients for catch-up.
    updates = await hs.streams["to_device"].get_updates(
        "master", start.to_device, now.to_device, 100
    )
    entities = {row.entity for _, row in updates.rows}
    assert {alice.user_id, "remote.example"} <= entities and not updates.limited


@pytest_twisted.ensureDeferred
async def test_a_long_queue_is_delivered_in_pages_without_loss(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    start = hs.current_token()
    for i in range(5):
        await send(bob, f"t{i}", {alice.user_id: {alice.device_id: {"n": i}}})
    section = ToDeviceSection(hs.to_device_store, limit=2)
    received = []
    since = start
    for _ in range(4):
        response, request = await run_section(section, alice, since, hs.current_token())
        received += [e["content"]["n"] for e in response.get("to_device", {}).get("events", [])]
        # The section pulled next_batch back to the last message it sent.
        since = request.now
    assert received == [0, 1, 2, 3, 4]
    assert await inbox_size(hs, alice.user_id) == 0


@pytest_twisted.ensureDeferred
async def test_sending_wakes_the_recipients_long_poll(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    section = section_of(hs, ToDeviceSection)
    since = hs.current_token()

    async def check(token):
        response, _ = await run_section(section, alice, since, token)
        return response

    poll = defer.ensureDeferred(
        hs.notifier.wait_for_events(alice.user_id, [], 10_000, check, lambda r: not r, since)
    )
    assert not poll.called
    started = hs.clock.time()
    await send(bob, "wake", {alice.user_id: {alice.device_id: {"hello": True}}})
    result = await poll
    assert result["to_device"]["events"][0]["content"] == {"hello": True}
    assert hs.clock.time() - started < 5


@pytest_twisted.ensureDeferred
async def test_deleting_a_device_drops_its_inbox_and_keys(server):
    hs, anon = server
    alice = await anon.register("alice")
    phone = await login(anon, "alice")
    bob = await anon.register("bob")
    await upload(phone, {"device_keys": TestDevice(phone.user_id, phone.device_id).device_keys()})
    await send(bob, "t1", {alice.user_id: {"*": {"x": 1}}})
    assert await inbox_size(hs, alice.user_id, phone.device_id) == 1

    resp = await alice.delete(
        f"{V3}/devices/{phone.device_id}",
        {
            "auth": {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "alice"},
                "password": "secret-pw",
            }
        },
    )
    assert resp.code == 200, resp
    assert await inbox_size(hs, alice.user_id, phone.device_id) == 0
    assert await inbox_size(hs, alice.user_id, alice.device_id) == 1
    keys = await bob.post(f"{V3}/keys/query", {"device_keys": {alice.user_id: []}})
    assert keys.json["device_keys"][alice.user_id] == {}


@pytest_twisted.ensureDeferred
async def test_send_to_device_errors(server):
    hs, anon = server
    alice = await anon.register("alice")
    path = f"{V3}/sendToDevice/m.test/t1"
    missing = await alice.put(path, {})
    assert (missing.code, missing.json["errcode"]) == (400, "M_MISSING_PARAM")
    bad_user = await alice.put(path, {"messages": {"alice": {"D": {}}}})
    assert (bad_user.code, bad_user.json["errcode"]) == (400, "M_INVALID_PARAM")
    bad_content = await alice.put(path, {"messages": {alice.user_id: {"D": "text"}}})
    assert (bad_content.code, bad_content.json["errcode"]) == (400, "M_BAD_JSON")
    nul = await alice.put(f"{V3}/sendToDevice/m.test/t%00x", {"messages": {}})
    assert nul.code == 400
    no_token = await alice.put(path, {"messages": {}}, token=False)
    assert (no_token.code, no_token.json["errcode"]) == (401, "M_MISSING_TOKEN")
