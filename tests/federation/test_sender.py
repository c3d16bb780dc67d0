"""The outbound queues: transaction size limits, and the EDUs of local
activity (receipts, presence) reaching the other server, while EDUs about
users of other servers are ignored on receipt."""

from __future__ import annotations

import pytest_twisted

from tests.federation.support import CLIENT_V3, send_transaction, wait_until
from tests.support.client import q


@pytest_twisted.ensureDeferred
async def test_transactions_hold_at_most_50_pdus_and_100_edus(joined_room):
    a, b, alice, bob, room_id = joined_room
    sender = a.hs.federation.sender
    # Make 60 events without federating them, then queue them all at once.
    sender.stopped = True
    events = []
    for i in range(60):
        events.append(
            await a.hs.event_creation.create_and_send(
                {
                    "type": "m.room.message",
                    "room_id": room_id,
                    "sender": alice.user_id,
                    "content": {"msgtype": "m.text", "body": f"bulk {i}"},
                }
            )
        )
    for writer in sender._positions["events"]:
        sender._positions["events"][writer] = a.hs.data_handler.get_position("events", writer)
    sender.stopped = False
    for event in events:
        sender.send_pdu(event, [b.name])
    for i in range(120):
        sender.send_edu(b.name, "org.example.test", {"n": i})

    async def all_arrived():
        return len(await b.hs.stores.events.have_seen_events(e.event_id for e in events)) == 60

    await wait_until(all_arrived)
    rows = await b.hs.db.execute(
        "test",
        "SELECT response_json FROM federation_received_transactions WHERE origin = ?",
        a.name,
    )
    import json

    sizes = sorted(len(json.loads(r[0])["pdus"]) for r in rows)
    assert max(sizes) == 50 and sum(sizes) == 60, sizes
    queue = sender.queue_for(b.name)
    await wait_until(lambda: _now(not queue.pending_edus))
    # 60 PDUs + 120 EDUs needed at least two transactions, none over the limits.
    assert queue.transactions_sent >= 2


@pytest_twisted.ensureDeferred
async def test_receipts_and_presence_reach_the_other_server(joined_room):
    a, b, alice, bob, room_id = joined_room
    sent = await alice.put(
        f"{CLIENT_V3}/rooms/{q(room_id)}/send/m.room.message/r1",
        {"msgtype": "m.text", "body": "read me"},
    )
    event_id = sent.json["event_id"]
    await wait_until(lambda: b.hs.stores.events.get_event(event_id, allow_none=True))
    assert (
        await bob.post(f"{CLIENT_V3}/rooms/{q(room_id)}/receipt/m.read/{q(event_id)}", {})
    ).code == 200
    assert (
        await alice.put(
            f"{CLIENT_V3}/presence/{q(alice.user_id)}/status",
            {"presence": "online", "status_msg": "here"},
        )
    ).code == 200

    async def alice_sees_receipt():
        sync = await alice.get(f"{CLIENT_V3}/sync", query={"timeout": "0"})
        room = sync.json["rooms"]["join"][room_id]
        for edu in room.get("ephemeral", {}).get("events", []):
            if edu["type"] == "m.receipt" and bob.user_id in edu["content"].get(event_id, {}).get(
                "m.read", {}
            ):
                return True
        return False

    async def bob_sees_presence():
        sync = await bob.get(f"{CLIENT_V3}/sync", query={"timeout": "0"})
        for event in sync.json.get("presence", {}).get("events", []):
            if event["sender"] == alice.user_id and event["content"]["presence"] == "online":
                return event
        return None

    await wait_until(alice_sees_receipt)
    presence = await wait_until(bob_sees_presence)
    assert presence["content"]["status_msg"] == "here"


@pytest_twisted.ensureDeferred
async def test_edus_about_other_servers_users_are_ignored(joined_room):
    a, b, alice, bob, room_id = joined_room
    impersonations = [
        {
            "edu_type": "m.typing",
            "content": {"room_id": room_id, "user_id": alice.user_id, "typing": True},
        },
        {
            "edu_type": "m.presence",
            "content": {
                "push": [
                    {"user_id": alice.user_id, "presence": "unavailable", "last_active_ago": 1}
                ]
            },
        },
        {
            "edu_type": "m.direct_to_device",
            "content": {
                "sender": alice.user_id,
                "type": "m.fake",
                "message_id": "m1",
                "messages": {alice.user_id: {"*": {"x": 1}}},
            },
        },
    ]
    answer = await send_transaction(b.hs, a.name, "spoof1", [], impersonations)
    assert answer == {"pdus": {}}
    assert a.hs.typing.typing_users(room_id) == []
    assert await a.hs.presence_store.get_presence_for_user(alice.user_id) is None
    sync = await alice.get(f"{CLIENT_V3}/sync", query={"timeout": "0"})
    assert not sync.json.get("to_device", {}).get("events")
    # The same typing EDU about B's own user is applied.
    own = {
        "edu_type": "m.typing",
        "content": {"room_id": room_id, "user_id": bob.user_id, "typing": True},
    }
    await send_transaction(b.hs, a.name, "own1", [], [own])
    assert a.hs.typing.typing_users(room_id) == [bob.user_id]


async def _now(value):
    return value
