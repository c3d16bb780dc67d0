"""Push notifications in a worker deployment (master, one events writer, one
sync worker, on PostgreSQL and an InProcessBus): actions are computed on the
events writer, a sync worker serves the counts from the database, a receipt
written on the master resets them there, and a push rule changed on the
master reaches the writer's rules cache through replication."""

from __future__ import annotations

import pytest_twisted

from atrium.util.caches.deferred_cache import MISSING
from tests.api.sync_sections_helper import shared_room
from tests.conftest import POSTGRES_URL, requires_postgres
from tests.push.test_notifications import send
from tests.replication.support import wait_until
from tests.support.client import q
from tests.workers.inprocess import caught_up, client_for, in_process_deployment

pytestmark = requires_postgres

V3 = "/_matrix/client/v3"


def _counts(body: dict, room_id: str) -> dict | None:
    entry = body.get("rooms", {}).get("join", {}).get(room_id)
    return entry["unread_notifications"] if entry else None


@pytest_twisted.ensureDeferred
async def test_sync_worker_shows_counts_computed_on_the_events_writer(tmp_path):
    workers = [("event_writer", 1), ("sync", 1)]
    async with in_process_deployment(tmp_path, POSTGRES_URL, workers) as (servers, _bus):
        master, writer, sync1 = servers["master"], servers["event_writer1"], servers["sync1"]
        anon = client_for(master)
        alice = await anon.register("alice")
        bob = await anon.register("bob")
        room_id = await shared_room(alice, bob)
        on_sync = client_for(sync1, alice.access_token)
        first = await on_sync.get(f"{V3}/sync", query={"timeout": 0})
        since = first.json["next_batch"]
        assert _counts(first.json, room_id) == {"notification_count": 0, "highlight_count": 0}

        one = await send(bob, room_id, "one")
        await send(bob, room_id, "two", **{"m.mentions": {"user_ids": [alice.user_id]}})
        await caught_up(servers)
        got = await on_sync.get(f"{V3}/sync", query={"since": since, "timeout": 0})
        assert _counts(got.json, room_id) == {"notification_count": 2, "highlight_count": 1}
        since = got.json["next_batch"]

        # The receipt goes to the master (it writes the receipts stream); the
        # sync worker's long-poll wakes with it and the counts it reads are reset.
        assert (
            await alice.post(f"{V3}/rooms/{q(room_id)}/receipt/m.read/{q(one)}", {})
        ).code == 200
        got = await on_sync.get(f"{V3}/sync", query={"since": since, "timeout": 10_000})
        assert _counts(got.json, room_id) == {"notification_count": 1, "highlight_count": 1}
        since = got.json["next_batch"]

        # Silence everything on the master: the writer's cached rules are dropped.
        cache = writer.push_rules_store.get_push_rules_for_user.cache
        assert cache.get_if_cached((alice.user_id,)) is not MISSING
        put = await alice.put(
            f"{V3}/pushrules/global/override/.m.rule.master/enabled", {"enabled": True}
        )
        assert put.code == 200
        await wait_until(
            lambda: cache.get_if_cached((alice.user_id,)) is MISSING,
            what="the events writer to drop alice's cached push rules",
        )
        await send(bob, room_id, "three")
        await caught_up(servers)
        got = await on_sync.get(f"{V3}/sync", query={"since": since, "timeout": 0})
        assert _counts(got.json, room_id) == {"notification_count": 1, "highlight_count": 1}
        listed = await client_for(master, alice.access_token).get(f"{V3}/notifications")
        assert [n["read"] for n in listed.json["notifications"]] == [False, True]
