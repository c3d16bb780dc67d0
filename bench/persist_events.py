"""Events persisted per second through EventPersister, on SQLite and PostgreSQL.

    python bench/persist_events.py [--postgres URL] [--events N]

Messages go into an existing room (``--members`` local members, default 10).
``--no-push`` persists without push rule evaluation (as before push
notifications existed); by default every message is evaluated against the
default push rules of every member, as the events writer does. Three ways of calling:
- batch=1: one event per persist_events call, each awaited before the next;
- batch=100: 100 events per call;
- 100 callers: 100 concurrent single-event calls (what group commit helps).
Events and their contexts are built before the clock starts: this measures
persistence only. PostgreSQL runs in a throwaway database on the server.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from typing import Any
from urllib.parse import urlparse, urlunparse

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psycopg2  # noqa: E402
from twisted.internet import defer, task  # noqa: E402

from atrium.events.event import Event, make_event_from_dict  # noqa: E402
from atrium.events.room_versions import V10  # noqa: E402
from atrium.state.context import StateResolver, compute_event_context  # noqa: E402
from atrium.storage.database import DatabasePool  # noqa: E402
from atrium.storage.engines import create_engine  # noqa: E402
from atrium.storage.migrations import prepare_database  # noqa: E402
from atrium.storage.persistence import EventPersister, build_event_persister  # noqa: E402
from atrium.storage.stores import LocalCacheInvalidator, Stores, build_stores  # noqa: E402
from atrium.util.caches import CacheRegistry  # noqa: E402
from atrium.util.clock import Clock  # noqa: E402

SERVER = "bench.example"
ROOM_ID = f"!bench:{SERVER}"
ALICE = f"@alice:{SERVER}"


class _Room:
    """Builds a linear room: each event's prev_event is the previous one."""

    def __init__(self) -> None:
        self.state: dict[tuple[str, str], str] = {}
        self.last: str | None = None
        self.depth = 0
        self.ts = 1_700_000_000_000

    def event(
        self, type: str, sender: str, content: dict[str, Any], state_key: str | None = None
    ) -> Event:
        self.depth += 1
        self.ts += 1
        auth = [
            self.state[k]
            for k in (("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", sender))
            if k in self.state
        ]
        d: dict[str, Any] = {
            "type": type,
            "room_id": ROOM_ID,
            "sender": sender,
            "content": content,
            "depth": self.depth,
            "origin_server_ts": self.ts,
            "prev_events": [self.last] if self.last else [],
            "auth_events": auth,
            "hashes": {"sha256": "bench"},
            "signatures": {SERVER: {"ed25519:bench": "bench"}},
        }
        if state_key is not None:
            d["state_key"] = state_key
        event = make_event_from_dict(d, V10)
        self.last = event.event_id
        if state_key is not None:
            self.state[(type, state_key)] = event.event_id
        return event


async def _contexts(stores: Stores, resolver: StateResolver, events: list[Event]) -> list[Any]:
    known: dict[str, Any] = {}
    items = []
    for event in events:
        ctx = await compute_event_context(event, stores.state, resolver, prev_contexts=known)
        known[event.event_id] = ctx
        items.append((event, ctx))
    return items


async def _setup(
    db: DatabasePool, members: int, push: bool
) -> tuple[Stores, EventPersister, StateResolver, _Room]:
    registry = CacheRegistry()
    invalidator = LocalCacheInvalidator(registry)
    stores = await build_stores(db, invalidator)
    stores.register_caches(registry)
    from twisted.internet import reactor

    def is_mine(user_id: str) -> bool:
        return user_id.endswith(SERVER)

    evaluator = None
    if push:
        from atrium.push.bulk import BulkPushRuleEvaluator
        from atrium.storage.stores.account_data import AccountDataStore
        from atrium.storage.stores.push_rules import PushRulesStore

        account_data = await AccountDataStore.create(db, invalidator)
        rules = PushRulesStore(db, account_data, invalidator)
        evaluator = BulkPushRuleEvaluator(stores.members, stores.events, rules, is_mine)
    persister = build_event_persister(
        stores,
        clock=Clock(reactor),
        instance_name="bench",
        is_mine=is_mine,
        push_evaluator=evaluator,
    )
    resolver = persister.resolver
    room = _Room()
    setup = [
        room.event("m.room.create", ALICE, {"room_version": "10"}, ""),
        room.event("m.room.member", ALICE, {"membership": "join"}, ALICE),
        room.event("m.room.power_levels", ALICE, {"users": {ALICE: 100}}, ""),
        room.event("m.room.join_rules", ALICE, {"join_rule": "public"}, ""),
    ]
    for i in range(members):
        user = f"@user{i}:{SERVER}"
        setup.append(room.event("m.room.member", user, {"membership": "join"}, user))
    await persister.persist_events(await _contexts(stores, resolver, setup))
    return stores, persister, resolver, room


async def _run_engine(label: str, db: DatabasePool, args: argparse.Namespace) -> None:
    n = args.events
    await prepare_database(db)
    stores, persister, resolver, room = await _setup(db, args.members, not args.no_push)

    async def messages(count: int) -> list[Any]:
        events = [room.event("m.room.message", ALICE, {"body": f"m{i}"}) for i in range(count)]
        return await _contexts(stores, resolver, events)

    # Warm up (connections, statement caches).
    for item in await messages(20):
        await persister.persist_events([item])

    items = await messages(n)
    start = time.perf_counter()
    for item in items:
        await persister.persist_events([item])
    _report(label, "batch=1 (sequential)", n, time.perf_counter() - start)

    items = await messages(n)
    start = time.perf_counter()
    for i in range(0, n, 100):
        await persister.persist_events(items[i : i + 100])
    _report(label, "batch=100", n, time.perf_counter() - start)

    items = await messages(n)
    start = time.perf_counter()
    for i in range(0, n, 100):
        await defer.gatherResults(
            [defer.ensureDeferred(persister.persist_events([it])) for it in items[i : i + 100]]
        )
    _report(label, "100 concurrent callers of batch=1", n, time.perf_counter() - start)


def _report(label: str, mode: str, n: int, seconds: float) -> None:
    print(f"{label:10} {mode:36} {n / seconds:10.0f} events/s  ({n} events, {seconds:.2f}s)")


async def main(reactor: Any, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = DatabasePool(create_engine(os.path.join(tmp, "bench.db")), reactor)
        db.start()
        try:
            await _run_engine("sqlite", db, args)
        finally:
            db.close()

    server = args.postgres
    try:
        admin = psycopg2.connect(server)
    except psycopg2.OperationalError as exc:
        print(f"postgres   skipped: cannot connect to {server} ({exc})".strip())
        return
    admin.autocommit = True
    name = f"atrium_bench_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = urlunparse(urlparse(server)._replace(path="/" + name))
    db = DatabasePool(create_engine(url), reactor)
    db.start()
    try:
        await _run_engine("postgres", db, args)
    finally:
        db.close()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "ATRIUM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="PostgreSQL server URL (a throwaway database is created on it)",
    )
    parser.add_argument("--events", type=int, default=2000, help="events per measurement")
    parser.add_argument("--members", type=int, default=10, help="local members of the room")
    parser.add_argument(
        "--no-push", action="store_true", help="do not evaluate push rules (the old path)"
    )
    task.react(main, [parser.parse_args()])
