"""Two real Atrium servers on loopback TLS, each with its own name: signed
transactions carry messages both ways, EDUs reach the other side's clients,
and a destination that was down is retried when it shows up again."""

from __future__ import annotations

import pytest_twisted

from tests.federation.support import CLIENT_V3, wait_until
from tests.support.client import q


async def _timeline_bodies(client, room_id):
    sync = await client.get(f"{CLIENT_V3}/sync", query={"timeout": "0"})
    assert sync.code == 200, sync
    room = sync.json.get("rooms", {}).get("join", {}).get(room_id, {})
    return [
        e["content"].get("body")
        for e in room.get("timeline", {}).get("events", [])
        if e["type"] == "m.room.message"
    ]


@pytest_twisted.ensureDeferred
async def test_messages_flow_both_ways_and_reach_sync(joined_room):
    a, b, alice, bob, room_id = joined_room
    # B holds the room: bob is joined there too, per B's own current state.
    assert bob.user_id in await b.hs.stores.members.get_users_in_room(room_id)
    assert bob.user_id in await a.hs.stores.members.get_users_in_room(room_id)

    sent = await alice.put(
        f"{CLIENT_V3}/rooms/{q(room_id)}/send/m.room.message/t1",
        {"msgtype": "m.text", "body": "hello from A"},
    )
    assert sent.code == 200, sent

    async def bob_sees_it():
        return "hello from A" in await _timeline_bodies(bob, room_id)

    await wait_until(bob_sees_it)
    stored = await b.hs.stores.events.get_event(sent.json["event_id"])
    assert stored.sender == alice.user_id and not stored.internal_metadata.outlier

    reply = await bob.put(
        f"{CLIENT_V3}/rooms/{q(room_id)}/send/m.room.message/t1",
        {"msgtype": "m.text", "body": "hello from B"},
    )
    assert reply.code == 200, reply

    async def alice_sees_it():
        return "hello from B" in await _timeline_bodies(alice, room_id)

    await wait_until(alice_sees_it)
    # Both servers agree on the DAG tip after the exchange.
    assert await a.hs.stores.events.get_latest_event_ids_in_room(
        room_id
    ) == await b.hs.stores.events.get_latest_event_ids_in_room(room_id)
    queue = a.hs.federation.sender.queue_for(b.name)
    assert queue is not None and queue.transactions_sent >= 1


@pytest_twisted.ensureDeferred
async def test_typing_and_to_device_edus_reach_the_other_server(joined_room):
    a, b, alice, bob, room_id = joined_room
    typing = await bob.put(
        f"{CLIENT_V3}/rooms/{q(room_id)}/typing/{q(bob.user_id)}",
        {"typing": True, "timeout": 30000},
    )
    assert typing.code == 200, typing

    async def alice_sees_typing():
        sync = await alice.get(f"{CLIENT_V3}/sync", query={"timeout": "0"})
        room = sync.json.get("rooms", {}).get("join", {}).get(room_id, {})
        for event in room.get("ephemeral", {}).get("events", []):
            if event["type"] == "m.typing" and bob.user_id in event["content"]["user_ids"]:
                return True
        return False

    await wait_until(alice_sees_typing)

    sent = await alice.put(
        f"{CLIENT_V3}/sendToDevice/m.test/txn1",
        {"messages": {bob.user_id: {bob.device_id: {"secret": 42}}}},
    )
    assert sent.code == 200, sent

    async def bob_gets_message():
        sync = await bob.get(f"{CLIENT_V3}/sync", query={"timeout": "0"})
        events = sync.json.get("to_device", {}).get("events", [])
        return [e for e in events if e["type"] == "m.test"]

    events = await wait_until(bob_gets_message)
    assert events == [{"type": "m.test", "sender": alice.user_id, "content": {"secret": 42}}]
    # Delivered messages leave the outbox.
    assert await a.hs.federation.store.get_outbox_messages(b.name, 10) == []


@pytest_twisted.ensureDeferred
async def test_device_list_update_tells_the_other_server(joined_room):
    a, b, alice, bob, room_id = joined_room
    since = (await alice.get(f"{CLIENT_V3}/sync", query={"timeout": "0"})).json["next_batch"]
    # A new login of bob's is a device-list change B must tell A about.
    login = await b.anon.post(
        f"{CLIENT_V3}/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "bob"},
            "password": "secret-pw",
        },
        token=False,
    )
    assert login.code == 200, login

    async def alice_sees_change():
        sync = await alice.get(f"{CLIENT_V3}/sync", query={"timeout": "0", "since": since})
        return bob.user_id in sync.json.get("device_lists", {}).get("changed", [])

    await wait_until(alice_sees_change)
    assert await b.hs.federation.store.get_pending_pokes(a.name, 10) == []


@pytest_twisted.ensureDeferred
async def test_backed_off_destination_is_retried_when_it_makes_a_request(joined_room):
    a, b, alice, bob, room_id = joined_room
    # Take B's federation listener away: A's next transaction to B fails.
    b_ports = [p for p in b.hs._ports if p.getHost().port == b.fed_port]
    for port in b_ports:
        await port.stopListening()
        b.hs._ports.remove(port)
    # ...and the connections A still has open to it.
    from twisted.internet import reactor, tcp

    for selectable in list(reactor.getReaders()):
        if isinstance(selectable, tcp.Server) and selectable.server in b_ports:
            selectable.abortConnection()
    await a.hs.federation.client.close()
    sent = await alice.put(
        f"{CLIENT_V3}/rooms/{q(room_id)}/send/m.room.message/t9",
        {"msgtype": "m.text", "body": "while B was away"},
    )
    assert sent.code == 200
    sender = a.hs.federation.sender

    async def backing_off():
        queue = sender.queue_for(b.name)
        return queue is not None and queue.backing_off

    await wait_until(backing_off)
    queue = sender.queue_for(b.name)

    # The back-off is stored right after it starts (the flag comes first).
    async def retry_stored():
        return await a.hs.federation.store.get_destination_retry(b.name) is not None

    await wait_until(retry_stored)

    # B comes back and talks to A: A stops backing off and delivers at once
    # (well before the 10 s minimum retry interval).
    b.hs._ports.extend(b.hs.federation.listen(b.hs.router))
    answer = await b.hs.federation.client.get_json(
        a.name, "/_matrix/federation/v1/query/profile", args={"user_id": alice.user_id}
    )
    assert answer == {} or "displayname" in answer

    async def bob_has_it():
        return await b.hs.stores.events.get_event(sent.json["event_id"], allow_none=True)

    await wait_until(bob_has_it, timeout=5.0)
    assert not queue.backing_off
    assert await a.hs.federation.store.get_destination_retry(b.name) is None
