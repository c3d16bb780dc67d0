"""StateGroupStore: one-statement reads, filters, bounded delta chains, the group cache."""

from __future__ import annotations

import pytest_twisted

from atrium.events.room_versions import V10
from atrium.storage.stores.state import MAX_DELTA_CHAIN, state_for_group_txn
from tests.storage.harness import StatementCounter, StorageHarness
from tests.support.events import standard_room

MEMBERS = [f"@m{i}:example.org" for i in range(8)]


def _expected(room) -> dict[tuple[str, str], str]:
    return {k: e.event_id for k, e in room.state.items()}


async def _group_of(h: StorageHarness, event_id: str) -> int:
    return (await h.stores.state.get_state_groups_for_events([event_id]))[event_id]


def _forget_groups(h: StorageHarness) -> None:
    h.stores.state._get_full_state_for_group.invalidate_all()


@pytest_twisted.ensureDeferred
async def test_state_of_a_delta_group_is_one_statement_for_members_and_others(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=MEMBERS)
    room.send("m.room.topic", room.creator, {"topic": "t"}, "")
    room.member(MEMBERS[0], "leave")
    # Each event persisted alone: every state event adds a delta edge.
    await h.persist_each(room.events.values())
    group = await _group_of(h, room.last_event_id)
    assert await h.count("state_group_edges") > 5

    _forget_groups(h)
    with StatementCounter(db) as counter:
        state = await h.stores.state.get_state_ids_for_group(group)
    assert dict(state) == _expected(room)
    assert len(counter.statements) == 1
    assert len(counter.transactions) == 1

    # Filters, on a cold cache (the database filters) and a warm one.
    types = [("m.room.member", MEMBERS[1]), ("m.room.topic", None), ("m.room.name", "")]
    want = {
        ("m.room.member", MEMBERS[1]): room.state[("m.room.member", MEMBERS[1])].event_id,
        ("m.room.topic", ""): room.state[("m.room.topic", "")].event_id,
    }
    _forget_groups(h)
    with StatementCounter(db) as counter:
        assert dict(await h.stores.state.get_state_ids_for_group(group, types)) == want
    assert len(counter.statements) == 1
    await h.stores.state.get_state_ids_for_group(group)
    with StatementCounter(db) as counter:
        assert dict(await h.stores.state.get_state_ids_for_group(group, types)) == want
        members = await h.stores.state.get_state_ids_for_group(group, [("m.room.member", None)])
    assert counter.statements == []
    assert set(members) == {k for k in room.state if k[0] == "m.room.member"}


@pytest_twisted.ensureDeferred
async def test_delta_chains_are_bounded(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10)
    for i in range(MAX_DELTA_CHAIN + 15):
        room.send("m.room.topic", room.creator, {"topic": f"t{i}"}, "")
    await h.persist_each(room.events.values())

    def chain_lengths(txn):
        edges = dict(txn.select_all("SELECT state_group, prev_state_group FROM state_group_edges"))
        groups = [r[0] for r in txn.select_all("SELECT id FROM state_groups")]
        lengths = {}
        for g in groups:
            n, cur = 0, g
            while cur in edges:
                cur, n = edges[cur], n + 1
            lengths[g] = n
        return lengths

    lengths = await db.run_interaction("chains", chain_lengths)
    assert max(lengths.values()) == MAX_DELTA_CHAIN
    # A group was written in full once the chain got too long, and later
    # groups are deltas on top of it again.
    full = [g for g, n in lengths.items() if n == 0]
    assert len(full) >= 2
    group = await _group_of(h, room.last_event_id)
    _forget_groups(h)
    assert dict(await h.stores.state.get_state_ids_for_group(group)) == _expected(room)
    # Every group reads back right straight from the database.
    for event_id in list(room.events)[-20:]:
        g = await _group_of(h, event_id)
        state = await db.run_interaction("read", state_for_group_txn, g)
        assert state[("m.room.topic", "")] == event_id


@pytest_twisted.ensureDeferred
async def test_batch_of_state_events_writes_chained_deltas(db):
    """A chain of state events persisted in ONE batch: groups build on each other."""
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=MEMBERS)
    await h.persist(room.events.values())
    group_rows = await h.count("state_groups")
    assert group_rows == len(room.events)
    assert await h.count("state_group_edges") == len(room.events) - 1
    # Deltas hold one row each; only the create event's group is full.
    assert await h.count("state_groups_state") == len(room.events)
    _forget_groups(h)
    for event_id in room.events:
        state = await h.stores.state.get_state_ids_for_event(event_id)
        assert state[("m.room.create", "")] == list(room.events)[0]
    last = await h.stores.state.get_state_ids_for_event(room.last_event_id)
    assert dict(last) == _expected(room)


@pytest_twisted.ensureDeferred
async def test_new_groups_are_cached_when_allocated(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10)
    await h.persist(room.events.values())
    topic = room.send("m.room.topic", room.creator, {"topic": "x"}, "")
    ((_, context),) = await h.contexts_for([topic])
    with StatementCounter(db) as counter:
        state = await h.stores.state.get_state_ids_for_group(context.state_group_after)
    assert counter.statements == []
    assert state[("m.room.topic", "")] == topic.event_id


@pytest_twisted.ensureDeferred
async def test_state_groups_for_events_skips_outliers_and_unknown(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10)
    await h.persist(room.events.values())
    ids = list(room.events)
    groups = await h.stores.state.get_state_groups_for_events([*ids, "$unknown"])
    assert set(groups) == set(ids)
    assert len(set(groups.values())) == len(ids)
    states = await h.stores.state.get_state_ids_for_events(ids[:2], [("m.room.create", "")])
    assert all(dict(s) == {("m.room.create", ""): ids[0]} for s in states.values())
