"""A real master HomeServer replicating to another process over an InProcessBus:
events rows and current-state cache invalidations arrive before that process's
notifier wakes, and events it missed are fetched from the database."""

from __future__ import annotations

import pytest_twisted

from atrium.replication.bus import InProcessBus
from atrium.util.caches.deferred_cache import MISSING
from tests.conftest import POSTGRES_URL
from tests.replication.support import (
    homeserver_on_bus,
    make_process,
    open_database,
    settle,
    wait_until,
)
from tests.support.client import q

V3 = "/_matrix/client/v3"
SECRET = "s3cret-replication-secret"


@pytest_twisted.ensureDeferred
async def test_reader_invalidates_state_and_membership_caches_before_it_is_woken(db_kind, tmp_path):
    bus = InProcessBus()
    async with homeserver_on_bus(
        tmp_path, db_kind, POSTGRES_URL, bus, worker_replication_secret=SECRET
    ) as (hs, anon):
        reader_db = open_database(hs.config.database_url)
        reader = await make_process("reader", reader_db, bus.connect(), with_stores=True)
        try:
            await reader.start()
            alice = await anon.register("alice")
            bob = await anon.register("bob")
            room_id = (await alice.post(f"{V3}/createRoom", {"preset": "public_chat"})).json[
                "room_id"
            ]
            await wait_until(
                lambda: (
                    reader.data_handler.get_position("events", "master")
                    == hs.stores.events.get_current_events_token()
                ),
                what="reader to see the room",
            )
            members = reader.stores.members
            # Warm the reader's caches with the state before bob joins.
            stale_state = await members.get_current_state_ids(room_id)
            stale_rooms = await members.get_rooms_for_user_with_stream_ordering(bob.user_id)
            assert ("m.room.member", bob.user_id) not in stale_state and not stale_rooms

            seen_at_wake: list[tuple[object, object]] = []

            def on_wake(stream, token, users, rooms):
                if stream == "events" and bob.user_id in users:
                    seen_at_wake.append(
                        (
                            members.get_current_state_ids.cache.get_if_cached((room_id,)),
                            members.get_rooms_for_user_with_stream_ordering.cache.get_if_cached(
                                (bob.user_id,)
                            ),
                        )
                    )

            reader.notify_hooks.append(on_wake)
            assert (await bob.post(f"{V3}/join/{q(room_id)}")).code == 200
            await wait_until(lambda: seen_at_wake, what="bob's join on the reader")
            state_then, rooms_then = seen_at_wake[0]
            # The current-state cache (dropped only by the caches stream) and bob's
            # room list (dropped by the events row) were both gone when /sync woke.
            assert state_then is MISSING
            assert rooms_then is MISSING
            fresh = await members.get_current_state_ids(room_id)
            assert ("m.room.member", bob.user_id) in fresh
        finally:
            await reader.stop()
            reader_db.close()


@pytest_twisted.ensureDeferred
async def test_reader_fetches_missed_events_from_the_database_in_order(db_kind, tmp_path):
    bus = InProcessBus()
    async with homeserver_on_bus(tmp_path, db_kind, POSTGRES_URL, bus) as (hs, anon):
        reader_db = open_database(hs.config.database_url)
        reader = await make_process("reader", reader_db, bus.connect(), with_stores=True)
        try:
            await reader.start()
            alice = await anon.register("alice")
            room_id = (await alice.post(f"{V3}/createRoom", {})).json["room_id"]
            await settle(reader)

            reader.connection.simulate_disconnect()
            missed = []
            for i in range(3):
                sent = await alice.put(
                    f"{V3}/rooms/{q(room_id)}/send/m.room.message/m{i}",
                    {"msgtype": "m.text", "body": str(i)},
                )
                missed.append(sent.json["event_id"])
            reader.connection.simulate_reconnect(notify=False)
            await alice.put(
                f"{V3}/rooms/{q(room_id)}/send/m.room.message/last",
                {"msgtype": "m.text", "body": "last"},
            )
            current = hs.stores.events.get_current_events_token()
            await wait_until(
                lambda: reader.data_handler.get_position("events", "master") == current,
                what="reader to catch up",
            )
            events = await hs.stores.events.get_events(missed)
            orderings = [events[e].internal_metadata.stream_ordering for e in missed]
            woken = [n[2] for n in reader.notifications("events") if room_id in n[4]]
            # Each missed event was applied (and woke the room), in stream order.
            assert [t for t in woken if t in orderings] == orderings
            assert woken == sorted(woken)
        finally:
            await reader.stop()
            reader_db.close()


@pytest_twisted.ensureDeferred
async def test_replication_endpoint_requires_the_secret(db_kind, tmp_path):
    bus = InProcessBus()
    async with homeserver_on_bus(
        tmp_path, db_kind, POSTGRES_URL, bus, worker_replication_secret=SECRET
    ) as (hs, anon):
        alice = await anon.register("alice")
        await alice.post(f"{V3}/createRoom", {})
        token = hs.stores.events.get_current_events_token()
        path = f"/_atrium/replication/streams/events/updates?instance=master&from=0&to={token}"
        missing = await anon.get(path, token=False)
        wrong = await anon.get(path, token="not-the-secret-at-all")
        assert missing.code == 403 and missing.json["errcode"] == "M_FORBIDDEN"
        assert wrong.code == 403 and wrong.json["errcode"] == "M_FORBIDDEN"
        # A user's access token is not the replication secret either.
        assert (await alice.get(path)).code == 403

        ok = await anon.get(path, token=SECRET)
        assert ok.code == 200, ok
        tokens = [t for t, _ in ok.json["rows"]]
        assert tokens == sorted(tokens) and tokens[-1] == token
        assert ok.json["upto"] == token and ok.json["limited"] is False
        page = await anon.get(path + "&limit=2", token=SECRET)
        assert [t for t, _ in page.json["rows"]] == tokens[:2]
        assert page.json["limited"] is True and page.json["upto"] == tokens[1]
        unknown = await anon.get(
            "/_atrium/replication/streams/nope/updates?instance=master&from=0&to=1", token=SECRET
        )
        assert unknown.code == 404


@pytest_twisted.ensureDeferred
async def test_replication_endpoints_are_disabled_without_a_secret(server):
    hs, anon = server
    assert hs.config.worker_replication_secret is None
    resp = await anon.get(
        "/_atrium/replication/streams/events/updates?instance=master&from=0&to=5",
        token="anything-at-all-here",
    )
    assert resp.code == 403 and resp.json["errcode"] == "M_FORBIDDEN"
    # A process alone has no bus and keeps the plain local invalidator.
    assert hs.replication is None


@pytest_twisted.ensureDeferred
async def test_missed_typing_rows_are_fetched_from_the_writer_over_http(db_kind, tmp_path):
    """Typing lives only in the writer's memory: a reader that missed changes gets
    them from the master's replication endpoint, authenticated with the secret."""
    from twisted.internet import reactor

    from atrium.replication.client import ReplicationHttpClient

    bus = InProcessBus()
    async with homeserver_on_bus(
        tmp_path, db_kind, POSTGRES_URL, bus, worker_replication_secret=SECRET
    ) as (hs, anon):
        reader_db = open_database(hs.config.database_url)
        http = ReplicationHttpClient(
            reactor, SECRET, lambda instance: anon.base_url if instance == "master" else None
        )
        reader = await make_process("reader", reader_db, bus.connect(), http=http)
        try:
            await reader.start()
            alice = await anon.register("alice")
            room_id = (await alice.post(f"{V3}/createRoom", {})).json["room_id"]
            await settle(reader)
            assert "master" in reader.data_handler.positions["typing"]

            reader.connection.simulate_disconnect()
            typed = await alice.put(
                f"{V3}/rooms/{q(room_id)}/typing/{q(alice.user_id)}",
                {"typing": True, "timeout": 30000},
            )
            assert typed.code == 200, typed
            assert not any(room_id in n[4] for n in reader.notifications("typing"))
            reader.connection.simulate_reconnect()
            await wait_until(
                lambda: any(room_id in n[4] for n in reader.notifications("typing")),
                what="the missed typing row",
            )
            assert reader.data_handler.get_position("typing", "master") == hs.typing.current_token()
            # The reader's copy of the typing state is the writer's.
            assert reader.typing.typing_users(room_id) == [alice.user_id]
        finally:
            await reader.stop()
            reader_db.close()
