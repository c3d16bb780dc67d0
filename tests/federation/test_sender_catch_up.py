"""Crash-safe outbound federation: events a destination missed (the sender
stopped before handling them or before they were acknowledged, the
destination was down, the in-memory queue overflowed) reach it later from
the database, without any further event being sent, and an event is never
sent twice in the normal path (docs/federation.md, "Outbound")."""

from __future__ import annotations

import json
from collections import Counter

import pytest_twisted
from twisted.internet import defer

from atrium.federation import per_destination
from atrium.handlers.event_writer import writer_for_room
from tests.conftest import POSTGRES_URL, requires_postgres
from tests.federation.support import (
    CLIENT_V3,
    announce,
    create_joined_room,
    cut_off,
    federating_deployment,
    federating_server,
    reconnect,
    restarted,
    wait_backing_off,
    wait_until,
)
from tests.federation.test_membership import send_text
from tests.support.client import q
from tests.workers.inprocess import client_for


async def _received_counts(b, origin) -> Counter[str]:
    """How many times each PDU came to ``b`` from ``origin`` (accepted transactions)."""
    rows = await b.hs.db.execute(
        "test",
        "SELECT response_json FROM federation_received_transactions WHERE origin = ?",
        origin,
    )
    counts: Counter[str] = Counter()
    for (raw,) in rows:
        counts.update(list(json.loads(raw)["pdus"]))
    return counts


async def _delivered(b, event_ids):
    return await b.hs.stores.events.have_seen_events(event_ids) == set(event_ids)


async def _rooms_row(a, destination, room_id):
    rows = await a.hs.db.execute(
        "test",
        "SELECT queued_stream_ordering, sent_stream_ordering FROM federation_destination_rooms"
        " WHERE destination = ? AND room_id = ?",
        destination,
        room_id,
    )
    return tuple(rows[0]) if rows else None


@pytest_twisted.ensureDeferred
async def test_events_pending_when_the_sender_stops_arrive_after_a_restart(db_kind, tmp_path):
    async with federating_server(tmp_path, "a", db_kind, POSTGRES_URL) as a:
        async with federating_server(tmp_path, "b") as b:
            alice, _bob, room_id = await create_joined_room(a, b)
            before = await send_text(alice, room_id, "before", "t0")
            await wait_until(lambda: _delivered(b, [before]))

            # B unreachable: A queues these, its transactions fail.
            await cut_off(b)
            queued = [await send_text(alice, room_id, f"queued {i}", f"q{i}") for i in range(2)]
            sender = a.hs.federation.sender
            await wait_backing_off(a.hs, b.name)
            # The sender dies: these are persisted but never handled by it.
            sender.stopped = True
            unhandled = [
                await send_text(alice, room_id, f"unhandled {i}", f"u{i}") for i in range(2)
            ]
            await a.hs.stop()
            reconnect(b)
            assert not await b.hs.stores.events.have_seen_events(queued + unhandled)

            async with restarted(a) as a2:
                # B talks to A (no event): A's stored back-off ends.
                await announce(b, a2)
                await wait_until(lambda: _delivered(b, queued + unhandled))
                queue = a2.hs.federation.sender.queue_for(b.name)
                await wait_until(lambda: _now(queue is not None and not queue.catching_up))
                counts = await _received_counts(b, a.name)
                assert all(counts[e] == 1 for e in [before, *queued, *unhandled]), counts
                queued_at, sent_at = await _rooms_row(a2, b.name, room_id)
                assert queued_at == sent_at


@pytest_twisted.ensureDeferred
async def test_a_destination_down_for_a_while_gets_what_it_missed(sqlite_servers):
    a, b = sqlite_servers
    alice, _bob, room_id = await create_joined_room(a, b)
    first = await send_text(alice, room_id, "first", "f")
    await wait_until(lambda: _delivered(b, [first]))

    await cut_off(b)
    missed = [await send_text(alice, room_id, f"missed {i}", f"m{i}") for i in range(5)]
    queue = a.hs.federation.sender.queue_for(b.name)
    await wait_until(lambda: _now(queue.backing_off))
    # Nothing of it is held in memory: the database says what B missed.
    assert queue.catching_up and not queue.pending_pdus
    assert not await b.hs.stores.events.have_seen_events(missed)

    reconnect(b)
    await announce(b, a)
    await wait_until(lambda: _delivered(b, missed))
    await wait_until(lambda: _now(not queue.catching_up))
    # And the normal path afterwards: each event once.
    after = [await send_text(alice, room_id, f"after {i}", f"a{i}") for i in range(3)]
    await wait_until(lambda: _delivered(b, after))
    counts = await _received_counts(b, a.name)
    assert all(counts[e] == 1 for e in [first, *missed, *after]), counts
    bodies = [(await b.hs.stores.events.get_event(e)).content["body"] for e in [*missed, *after]]
    assert bodies == [f"missed {i}" for i in range(5)] + [f"after {i}" for i in range(3)]


@pytest_twisted.ensureDeferred
async def test_a_full_queue_falls_back_to_catch_up(sqlite_servers, monkeypatch):
    a, b = sqlite_servers
    alice, _bob, room_id = await create_joined_room(a, b)
    monkeypatch.setattr(per_destination, "MAX_PENDING", 2)
    # B takes its time answering: A's queue fills up behind the transaction in flight.
    gate: defer.Deferred[None] = defer.Deferred()
    entered: list[str] = []
    handler = b.hs.federation.transactions
    original = handler.on_transaction

    async def slow(origin, txn_id, body):
        entered.append(txn_id)
        await gate
        return await original(origin, txn_id, body)

    handler.on_transaction = slow
    first = await send_text(alice, room_id, "in flight", "i")
    await wait_until(lambda: _now(entered))
    rest = [await send_text(alice, room_id, f"overflow {i}", f"o{i}") for i in range(5)]
    queue = a.hs.federation.sender.queue_for(b.name)
    await wait_until(lambda: _now(queue.catching_up))
    assert len(queue.pending_pdus) <= 2
    handler.on_transaction = original
    gate.callback(None)

    await wait_until(lambda: _delivered(b, [first, *rest]))
    await wait_until(lambda: _now(not queue.catching_up))
    counts = await _received_counts(b, a.name)
    assert all(counts[e] == 1 for e in [first, *rest]), counts


async def _now(value):
    return value


@requires_postgres
@pytest_twisted.ensureDeferred
async def test_a_restarted_sender_resumes_every_events_writer(tmp_path):
    """Two events writers (a vector position): events both wrote while the
    sender was dead are sent when a new sender starts, each once."""
    async with federating_deployment(tmp_path, POSTGRES_URL, [("event_writer", 2)]) as servers:
        master = servers["master"]
        writers = list(master.config.writers_for("events"))
        async with federating_server(tmp_path, "b") as b:
            alice = await client_for(master).register("alice")
            bob = await b.anon.register("bob")
            rooms: dict[str, str] = {}
            while len(rooms) < 2:
                created = await alice.post(f"{CLIENT_V3}/createRoom", {"preset": "public_chat"})
                assert created.code == 200, created
                rooms.setdefault(
                    writer_for_room(created.json["room_id"], writers), created.json["room_id"]
                )
            for room_id in rooms.values():
                joined = await bob.post(
                    f"{CLIENT_V3}/join/{q(room_id)}", {}, query={"via": master.server_name}
                )
                assert joined.code == 200, joined
            first = [
                await send_text(alice, r, "first", f"f{i}") for i, r in enumerate(rooms.values())
            ]
            await wait_until(lambda: _delivered(b, first))

            old = master.federation.sender
            old.stopped = True  # the sender process dies
            missed = []
            for i in range(2):
                for n, room_id in enumerate(rooms.values()):
                    missed.append(await send_text(alice, room_id, f"missed {i}", f"m{i}{n}"))
            await old.stop()
            new = master.federation.build_sender()
            master.federation.sender = new
            await new.start()
            await wait_until(lambda: _delivered(b, missed))
            counts = await _received_counts(b, master.server_name)
            assert all(counts[e] == 1 for e in [*first, *missed]), counts
            stored = await new.store.get_sender_positions(master.instance_name)
            assert set(stored) == set(writers)
