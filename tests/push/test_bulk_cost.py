"""Push evaluation where events are persisted stays cheap in big rooms: the
number of statements for one message does not grow with the room's local
members (both engines), and the actions land with the event."""

from __future__ import annotations

import pytest_twisted

from atrium.events.room_versions import V10
from atrium.push.bulk import BulkPushRuleEvaluator
from atrium.storage.persistence import build_event_persister
from atrium.storage.stores.account_data import AccountDataStore
from atrium.storage.stores.push_rules import PushRulesStore
from atrium.util.clock import Clock
from tests.storage.harness import StatementCounter, StorageHarness, is_mine
from tests.support.events import CREATOR, RoomBuilder


async def _writer_with_push(db):
    harness = await StorageHarness.create(db)
    account_data = await AccountDataStore.create(db, harness.invalidator)
    rules = PushRulesStore(db, account_data, harness.invalidator)
    from twisted.internet import reactor

    from atrium.util.caches.registry import register_store_caches

    register_store_caches(harness.registry, rules)
    harness.persister = build_event_persister(
        harness.stores,
        clock=Clock(reactor),
        instance_name="master",
        is_mine=is_mine,
        resolver=harness.resolver,
        push_evaluator=BulkPushRuleEvaluator(
            harness.stores.members, harness.stores.events, rules, is_mine
        ),
    )
    return harness, rules


async def _cost_of_one_message(db, members: int) -> tuple[int, int, int]:
    harness, rules = await _writer_with_push(db)
    users = [f"@m{members}_{i}:example.org" for i in range(members)]
    room = RoomBuilder(V10, room_id=f"!r{members}:example.org")
    room.create()
    room.member(CREATOR, "join")
    room.send("m.room.power_levels", CREATOR, {"users": {CREATOR: 100}}, "")
    room.send("m.room.join_rules", CREATOR, {"join_rule": "public"}, "")
    for user_id in users:
        room.member(user_id, "join")
    await harness.persist(list(room.events.values()))
    # Warm the caches the way a running writer has them.
    await harness.persist(
        [room.send("m.room.message", CREATOR, {"msgtype": "m.text", "body": "0"})]
    )
    message = room.send("m.room.message", CREATOR, {"msgtype": "m.text", "body": "hi"})
    items = await harness.contexts_for([message])
    with StatementCounter(db) as counter:
        await harness.persister.persist_events(items)
    stored = await harness.count("event_push_actions", "event_id = ?", message.event_id)
    return len(counter.statements), len(counter.transactions), stored


@pytest_twisted.ensureDeferred
async def test_statements_per_message_do_not_grow_with_local_members(db):
    small = await _cost_of_one_message(db, 5)
    big = await _cost_of_one_message(db, 100)
    # Every member but the sender gets a row (.m.rule.message notifies).
    assert (small[2], big[2]) == (5, 100)
    assert big[0] == small[0] and big[1] == small[1], (small, big)
    assert big[0] <= 25
