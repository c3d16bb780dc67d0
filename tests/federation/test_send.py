"""Inbound PUT /send: the checks on receipt of a PDU (hash, signatures,
auth against auth events / state before / current state), transaction
limits and retries, and filling gaps in the DAG from the sending server."""

from __future__ import annotations

import pytest_twisted

from atrium.federation.client import HttpResponseError
from tests.federation.support import (
    CLIENT_V3,
    build_remote_event,
    send_transaction,
)
from tests.support.client import q


async def _message(a, b, room_id, sender, body, **kwargs):
    return await build_remote_event(
        a.hs, b.hs, room_id, sender, "m.room.message", {"msgtype": "m.text", "body": body}, **kwargs
    )


async def _alice_timeline(alice, room_id):
    sync = await alice.get(f"{CLIENT_V3}/sync", query={"timeout": "0"})
    room = sync.json["rooms"]["join"][room_id]
    return [e["event_id"] for e in room["timeline"]["events"]]


@pytest_twisted.ensureDeferred
async def test_wrong_content_hash_is_stored_redacted(joined_room):
    a, b, alice, bob, room_id = joined_room
    event = await _message(a, b, room_id, bob.user_id, "original")
    pdu = event.get_pdu_json()
    # The signature covers the redacted event, so it still verifies; the
    # content hash does not match any more.
    pdu["content"]["body"] = "tampered"
    answer = await send_transaction(b.hs, a.name, "hash1", [pdu])
    assert answer == {"pdus": {event.event_id: {}}}
    stored = await a.hs.stores.events.get_event(event.event_id)
    assert stored.content == {}
    assert event.event_id in await _alice_timeline(alice, room_id)


@pytest_twisted.ensureDeferred
async def test_bad_signature_is_dropped(joined_room):
    a, b, alice, bob, room_id = joined_room
    event = await _message(a, b, room_id, bob.user_id, "x")
    pdu = event.get_pdu_json()
    key_id = f"ed25519:{b.hs.signing_key.version}"
    pdu["signatures"][b.name][key_id] = pdu["signatures"][b.name][key_id][::-1]
    answer = await send_transaction(b.hs, a.name, "sig1", [pdu])
    assert "Signature check failed" in answer["pdus"][event.event_id]["error"]
    assert not await a.hs.stores.events.have_seen_events([event.event_id])
    # Signed by the wrong server entirely (A's key for B's user).
    foreign = await build_remote_event(
        a.hs, a.hs, room_id, bob.user_id, "m.room.message", {"body": "y"}
    )
    answer = await send_transaction(b.hs, a.name, "sig2", [foreign])
    assert "error" in answer["pdus"][foreign.event_id]
    assert not await a.hs.stores.events.have_seen_events([foreign.event_id])


@pytest_twisted.ensureDeferred
async def test_event_failing_auth_is_rejected_not_served(joined_room):
    a, b, alice, bob, room_id = joined_room
    extremities = await a.hs.stores.events.get_latest_event_ids_in_room(room_id)
    # mallory@B never joined the room.
    event = await _message(a, b, room_id, "@mallory:" + b.name, "let me in")
    answer = await send_transaction(b.hs, a.name, "auth1", [event])
    assert "rejected" in answer["pdus"][event.event_id]["error"]
    assert await a.hs.stores.events.have_seen_events([event.event_id])
    assert await a.hs.stores.events.get_event(event.event_id, allow_none=True) is None
    rejected = await a.hs.stores.events.get_event(event.event_id, allow_rejected=True)
    assert rejected.rejected_reason
    assert await a.hs.stores.events.get_latest_event_ids_in_room(room_id) == extremities
    assert event.event_id not in await _alice_timeline(alice, room_id)
    # bob@B may not give himself power: rejected against the state before it.
    pl = await build_remote_event(
        a.hs,
        b.hs,
        room_id,
        bob.user_id,
        "m.room.power_levels",
        {"users": {bob.user_id: 100}},
        state_key="",
    )
    answer = await send_transaction(b.hs, a.name, "auth2", [pl])
    assert "rejected" in answer["pdus"][pl.event_id]["error"]
    current = await a.hs.stores.members.get_current_state_ids(room_id)
    assert current[("m.room.power_levels", "")] != pl.event_id


@pytest_twisted.ensureDeferred
async def test_event_allowed_before_a_ban_is_soft_failed(joined_room):
    a, b, alice, bob, room_id = joined_room
    before_ban = await a.hs.stores.members.get_current_state_ids(room_id)
    tip = sorted(await a.hs.stores.events.get_latest_event_ids_in_room(room_id))
    banned = await alice.post(f"{CLIENT_V3}/rooms/{q(room_id)}/ban", {"user_id": bob.user_id})
    assert banned.code == 200, banned
    extremities = await a.hs.stores.events.get_latest_event_ids_in_room(room_id)
    # Bob's server builds on the DAG as it was before the ban.
    event = await _message(
        a, b, room_id, bob.user_id, "evading", prev_event_ids=tip, auth_from_state=before_ban
    )
    answer = await send_transaction(b.hs, a.name, "soft1", [event])
    assert answer == {"pdus": {event.event_id: {}}}
    stored = await a.hs.stores.events.get_event(event.event_id)
    assert stored.internal_metadata.soft_failed and stored.rejected_reason is None
    assert await a.hs.stores.events.get_latest_event_ids_in_room(room_id) == extremities
    assert event.event_id not in await _alice_timeline(alice, room_id)


@pytest_twisted.ensureDeferred
async def test_oversized_transactions_are_refused_whole(joined_room):
    a, b, alice, bob, room_id = joined_room
    events = [await _message(a, b, room_id, bob.user_id, f"m{i}") for i in range(51)]
    for txn_id, pdus, edus in (
        ("big1", events, []),
        ("big2", events[:1], [{"edu_type": "m.typing", "content": {}}] * 101),
    ):
        try:
            await send_transaction(b.hs, a.name, txn_id, pdus, edus)
            raise AssertionError("an oversized transaction was accepted")
        except HttpResponseError as e:
            assert e.code == 400 and e.errcode == "M_TOO_LARGE", e.body
        assert await a.hs.federation.store.get_received_transaction(b.name, txn_id) is None
    assert not await a.hs.stores.events.have_seen_events([e.event_id for e in events])


@pytest_twisted.ensureDeferred
async def test_retried_transaction_gets_the_same_answer_once(joined_room):
    a, b, alice, bob, room_id = joined_room
    event = await _message(a, b, room_id, bob.user_id, "once")
    first = await send_transaction(b.hs, a.name, "retry1", [event])
    # Same ID, different content: the stored answer, nothing new processed.
    other = await _message(a, b, room_id, bob.user_id, "twice")
    second = await send_transaction(b.hs, a.name, "retry1", [other])
    assert first == second == {"pdus": {event.event_id: {}}}
    assert not await a.hs.stores.events.have_seen_events([other.event_id])


async def _persist_quietly(server, events):
    """Store events of ``server``'s own user on it without federating them."""
    sender = server.hs.federation.sender
    sender.stopped = True
    try:
        for event in events:
            await server.hs.federation.events.process_event(server.name, event)
    finally:
        handler = server.hs.data_handler
        for writer in sender._positions["events"]:
            sender._positions["events"][writer] = handler.get_position("events", writer)
        sender.stopped = False


async def _chain_on(b, room_id, user_id, count):
    events = []
    for i in range(count):
        prevs = [events[-1].event_id] if events else None
        event = await build_remote_event(
            b.hs,
            b.hs,
            room_id,
            user_id,
            "m.room.message",
            {"msgtype": "m.text", "body": f"gap {i}"},
            prev_event_ids=prevs,
        )
        await _persist_quietly(b, [event])
        events.append(event)
    return events


@pytest_twisted.ensureDeferred
async def test_missing_prev_events_are_fetched_from_the_origin(joined_room):
    a, b, alice, bob, room_id = joined_room
    (missed,) = await _chain_on(b, room_id, bob.user_id, 1)
    assert not await a.hs.stores.events.have_seen_events([missed.event_id])
    latest = await build_remote_event(
        b.hs, b.hs, room_id, bob.user_id, "m.room.message", {"msgtype": "m.text", "body": "now"}
    )
    assert latest.prev_event_ids() == [missed.event_id]
    # The origin holds what it sends (it answers questions about it).
    await _persist_quietly(b, [latest])
    answer = await send_transaction(b.hs, a.name, "gap1", [latest])
    assert answer == {"pdus": {latest.event_id: {}}}
    fetched = await a.hs.stores.events.get_event(missed.event_id)
    assert not fetched.internal_metadata.outlier
    timeline = await _alice_timeline(alice, room_id)
    assert timeline.index(missed.event_id) < timeline.index(latest.event_id)


@pytest_twisted.ensureDeferred
async def test_gap_too_long_to_fill_takes_state_from_the_origin(joined_room):
    a, b, alice, bob, room_id = joined_room
    # Twelve events A never saw: /get_missing_events returns the ten nearest,
    # the oldest of those has an unknown prev_event, so its state comes from
    # B's /state_ids.
    chain = await _chain_on(b, room_id, bob.user_id, 12)
    latest = await build_remote_event(
        b.hs, b.hs, room_id, bob.user_id, "m.room.message", {"msgtype": "m.text", "body": "end"}
    )
    await _persist_quietly(b, [latest])
    answer = await send_transaction(b.hs, a.name, "gap2", [latest])
    assert answer == {"pdus": {latest.event_id: {}}}
    events = a.hs.stores.events
    assert not await events.have_seen_events([chain[0].event_id, chain[1].event_id])
    for event in chain[2:] + [latest]:
        stored = await events.get_event(event.event_id)
        assert not stored.internal_metadata.outlier, event
    state = await a.hs.stores.state.get_state_ids_for_event(latest.event_id)
    assert state[("m.room.member", bob.user_id)] is not None
    assert latest.event_id in await events.get_latest_event_ids_in_room(room_id)
