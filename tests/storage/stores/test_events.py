"""EventsStore: loading events as stored, redactions, the DAG and auth chains."""

from __future__ import annotations

import pytest
import pytest_twisted

from atrium.events.event import Event, EventInternalMetadata
from atrium.events.room_versions import V1, V3, V10, EventFormatVersion
from atrium.state.context import EventContext
from atrium.state.memory_store import InMemoryStateResolutionStore
from atrium.storage.stores.errors import NotFoundError
from tests.storage.harness import StatementCounter, StorageHarness
from tests.support.events import RoomBuilder, make_pdu, standard_room

BOB = "@bob:example.org"
EVE = "@eve:evil.example"


def _fresh_cache(h: StorageHarness) -> None:
    h.stores.events.event_cache.invalidate_all()


@pytest_twisted.ensureDeferred
async def test_v2_format_event_in_v10_room_keeps_its_event_id(db):
    """The stored format version, not the room's, decides how an event is loaded."""
    h = await StorageHarness.create(db)
    room = standard_room(V10)
    await h.persist(room.events.values())
    # A v3-room-style event (standard base64 IDs) that landed in a v10 room;
    # pick content whose ID differs between the two base64 alphabets.
    for n in range(100):
        body = {"body": f"old format {n}"}
        d = make_pdu(V3, type="m.room.message", sender=BOB, content=body, room_id=room.room_id)
        event = Event(d.get_dict(), V10, EventFormatVersion.V2, EventInternalMetadata(outlier=True))
        if event.event_id != Event(d.get_dict(), V10).event_id:
            break
    else:
        pytest.fail("no content gave distinct IDs")
    original_id = event.event_id
    await h.persister.persist_events([(event, EventContext.for_outlier())])

    _fresh_cache(h)
    loaded = await h.stores.events.get_event(original_id)
    assert loaded is not None
    assert loaded.format_version == EventFormatVersion.V2
    assert loaded.room_version == V10
    # Recomputing the ID from the loaded JSON and format gives the same ID.
    recomputed = Event(loaded.get_dict(), loaded.room_version, loaded.format_version)
    assert recomputed.event_id == original_id
    assert loaded.content == {"body": body["body"]}


@pytest_twisted.ensureDeferred
async def test_v1_format_event_round_trips_with_its_own_id(db):
    h = await StorageHarness.create(db)
    room = standard_room(V1)
    await h.persist(room.events.values())
    _fresh_cache(h)
    events = await h.stores.events.get_events(list(room.events))
    assert set(events) == set(room.events)
    for event_id, event in events.items():
        assert event.format_version == EventFormatVersion.V1
        assert event.get_dict()["event_id"] == event_id
        assert event.prev_event_ids() == room.events[event_id].prev_event_ids()


@pytest_twisted.ensureDeferred
async def test_get_events_loads_a_batch_in_one_statement_then_hits_the_cache(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[f"@u{i}:example.org" for i in range(20)])
    await h.persist(room.events.values())
    _fresh_cache(h)
    ids = list(room.events)
    with StatementCounter(db) as counter:
        events = await h.stores.events.get_events(ids)
    assert set(events) == set(ids)
    assert len(counter.statements) == 1
    assert counter.transactions == ["get_events"]
    with StatementCounter(db) as counter:
        again = await h.stores.events.get_events(ids)
    assert counter.statements == []
    assert again[ids[3]] is events[ids[3]]


@pytest_twisted.ensureDeferred
async def test_internal_metadata_and_rejection_are_loaded(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[BOB])
    await h.persist(room.events.values())
    soft = room.build("m.room.message", BOB, {"body": "soft"})
    soft.internal_metadata.soft_failed = True
    rejected = room.build("m.room.message", BOB, {"body": "rejected"}, origin_server_ts=5)
    mine = room.build("m.room.message", BOB, {"body": "mine"}, origin_server_ts=6)
    mine.internal_metadata.txn_id = "txn1"
    mine.internal_metadata.device_id = "DEV"
    items = await h.contexts_for([soft, mine])
    (rej_item,) = await h.contexts_for([rejected])
    items.append((rejected, rej_item[1].with_rejection("auth")))
    await h.persister.persist_events(items)

    _fresh_cache(h)
    events = h.stores.events
    loaded = await events.get_event(soft.event_id)
    assert loaded.internal_metadata.soft_failed and not loaded.internal_metadata.outlier
    assert loaded.internal_metadata.stream_ordering == soft.internal_metadata.stream_ordering
    assert loaded.internal_metadata.instance_name == "master"
    assert (await events.get_event(mine.event_id)).internal_metadata.txn_id == "txn1"
    assert await events.get_event(rejected.event_id, allow_none=True) is None
    with pytest.raises(NotFoundError):
        await events.get_event(rejected.event_id)
    also = await events.get_event(rejected.event_id, allow_rejected=True)
    assert also.rejected_reason == "auth"
    assert await events.have_seen_events([rejected.event_id, "$nope"]) == {rejected.event_id}
    assert await events.get_event_id_for_txn(room.room_id, BOB, "DEV", "txn1") == mine.event_id
    assert await events.get_event_id_for_txn(room.room_id, BOB, "DEV", "txn2") is None


async def _room_with_message(h: StorageHarness, version, sender: str):
    room = standard_room(version, members=[BOB])
    if sender not in (BOB, room.creator):
        room.member(sender, "join")
    target = room.send("m.room.message", sender, {"body": "secret"})
    await h.persist(room.events.values())
    return room, target


@pytest_twisted.ensureDeferred
async def test_same_server_redaction_prunes_the_event(db):
    h = await StorageHarness.create(db)
    room, target = await _room_with_message(h, V10, BOB)
    assert (await h.stores.events.get_event(target.event_id)).content == {"body": "secret"}
    redaction = room.send("m.room.redaction", room.creator, {}, redacts=target.event_id)
    await h.persist([redaction])
    # The writer's cached copy was invalidated by the redaction.
    loaded = await h.stores.events.get_event(target.event_id)
    assert loaded.content == {}
    assert loaded.internal_metadata.redacted
    assert loaded.event_id == target.event_id
    _fresh_cache(h)
    assert (await h.stores.events.get_event(target.event_id)).content == {}


@pytest_twisted.ensureDeferred
async def test_other_server_redaction_is_not_applied_at_load_in_v3_plus_rooms(db):
    """rooms/v3 "Handling redactions": only the sender-domain check is made at load time."""
    h = await StorageHarness.create(db)
    room, target = await _room_with_message(h, V10, BOB)
    room.member(EVE, "join")
    room.send("m.room.redaction", EVE, {}, redacts=target.event_id)
    await h.persist(list(room.events.values())[-2:])
    _fresh_cache(h)
    assert (await h.stores.events.get_event(target.event_id)).content == {"body": "secret"}


@pytest_twisted.ensureDeferred
async def test_any_accepted_redaction_applies_in_v1_rooms(db):
    """Rooms 1-2 checked redactions in the auth rules, so storage applies them all."""
    h = await StorageHarness.create(db)
    room, target = await _room_with_message(h, V1, BOB)
    room.member(EVE, "join")
    room.send("m.room.redaction", EVE, {}, redacts=target.event_id)
    await h.persist(list(room.events.values())[-2:])
    _fresh_cache(h)
    assert (await h.stores.events.get_event(target.event_id)).content == {}


@pytest_twisted.ensureDeferred
async def test_rejected_redaction_does_not_prune(db):
    h = await StorageHarness.create(db)
    room, target = await _room_with_message(h, V10, BOB)
    redaction = room.send("m.room.redaction", room.creator, {}, redacts=target.event_id)
    ((event, context),) = await h.contexts_for([redaction])
    await h.persister.persist_events([(event, context.with_rejection("not allowed"))])
    _fresh_cache(h)
    assert (await h.stores.events.get_event(target.event_id)).content == {"body": "secret"}


@pytest_twisted.ensureDeferred
async def test_auth_chain_ids_and_depths(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[BOB])
    msg = room.send("m.room.message", BOB, {"body": "hi"})
    await h.persist(room.events.values())

    def chain_of(event_ids):
        out: set[str] = set()
        todo = list(event_ids)
        while todo:
            for auth_id in room.events[todo.pop()].auth_event_ids():
                if auth_id not in out:
                    out.add(auth_id)
                    todo.append(auth_id)
        return out

    events = h.stores.events
    assert await events.get_auth_chain_ids([msg.event_id]) == chain_of([msg.event_id])
    assert await events.get_auth_chain_ids([msg.event_id], include_given=True) == chain_of(
        [msg.event_id]
    ) | {msg.event_id}
    assert await events.get_max_depth_of(list(room.events)) == msg.depth
    assert await events.get_max_depth_of(["$unknown"]) == 0
    depths = await events.get_auth_events_and_depths([msg.event_id])
    assert list(depths) == [msg.event_id]
    assert depths[msg.event_id][0] == msg.depth
    assert sorted(depths[msg.event_id][1]) == sorted(msg.auth_event_ids())


@pytest_twisted.ensureDeferred
async def test_auth_chain_difference_matches_the_in_memory_walk(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[BOB, "@carol:example.org"])
    base = room.last_event_id
    topic_a = room.send("m.room.topic", BOB, {"topic": "a"}, "")
    room.last_event_id = base
    leave = room.member("@carol:example.org", "leave")
    topic_b = room.send("m.room.topic", room.creator, {"topic": "b"}, "")
    await h.persist(room.events.values())
    state_sets = [
        {room.events[base].event_id, topic_a.event_id},
        {leave.event_id, topic_b.event_id},
    ]
    expected = await InMemoryStateResolutionStore(room.events.values()).get_auth_chain_difference(
        room.room_id, state_sets
    )
    got = await h.stores.events.get_auth_chain_difference(room.room_id, state_sets)
    assert got == expected
    assert topic_a.event_id in got and leave.event_id in got


@pytest_twisted.ensureDeferred
async def test_events_of_unknown_room_versions_are_not_loaded(db):
    h = await StorageHarness.create(db)
    room = RoomBuilder(V10, room_id="!weird:example.org")
    room.create(content={"room_version": "org.example.unknown", "creator": room.creator})
    await h.persister.persist_events(
        [(room.events[room.last_event_id], EventContext.for_outlier())]
    )
    _fresh_cache(h)
    assert await h.stores.events.get_event(room.last_event_id, allow_none=True) is None
    assert await h.stores.events.have_seen_events([room.last_event_id]) == {room.last_event_id}
