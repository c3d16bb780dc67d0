"""A writer's storage stack over a test database: read stores, persister, resolver.

``StorageHarness.persist(events)`` computes the contexts of a chain of
events (each may build on the previous ones) and persists them in one batch,
the way an events writer does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from twisted.internet import reactor

from atrium.events.event import Event
from atrium.state.context import EventContext, StateResolver, compute_event_context
from atrium.storage.database import DatabasePool
from atrium.storage.persistence import EventPersister, build_event_persister
from atrium.storage.stores import LocalCacheInvalidator, Stores, build_stores
from atrium.storage.stores.state import StateMap
from atrium.util.caches import CacheRegistry
from atrium.util.clock import Clock

SERVER_NAME = "example.org"


def is_mine(user_id: str) -> bool:
    return user_id.endswith(":" + SERVER_NAME)


class RecordingInvalidator(LocalCacheInvalidator):
    """The local invalidator, remembering every call (what replication would publish)."""

    def __init__(self, registry: CacheRegistry) -> None:
        super().__init__(registry)
        self.calls: list[tuple[str, list[Any] | None]] = []

    def invalidate(self, cache_name: str, keys: Any) -> None:
        self.calls.append((cache_name, None if keys is None else list(keys)))
        super().invalidate(cache_name, keys)


class StorageHarness:
    def __init__(self, db: DatabasePool, stores: Stores, registry: CacheRegistry) -> None:
        self.db = db
        self.stores = stores
        self.registry = registry
        self.invalidator: RecordingInvalidator = stores.invalidator  # type: ignore[assignment]
        self.resolver = StateResolver(stores.events, stores.state)
        self.persister: EventPersister = build_event_persister(
            stores,
            clock=Clock(reactor),
            instance_name="master",
            is_mine=is_mine,
            resolver=self.resolver,
        )

    @classmethod
    async def create(cls, db: DatabasePool) -> StorageHarness:
        registry = CacheRegistry()
        stores = await build_stores(db, RecordingInvalidator(registry))
        stores.register_caches(registry)
        return cls(db, stores, registry)

    async def contexts_for(
        self,
        events: Sequence[Event],
        prev_contexts: Mapping[str, EventContext] | None = None,
        state_ids_before: Mapping[str, StateMap] | None = None,
    ) -> list[tuple[Event, EventContext]]:
        """Contexts for a chain of events, each seeing the ones before it."""
        known = dict(prev_contexts or {})
        event_map = {e.event_id: e for e in events}
        result = []
        for event in events:
            context = await compute_event_context(
                event,
                self.stores.state,
                self.resolver,
                prev_contexts=known,
                event_map=event_map,
                state_ids_before=(state_ids_before or {}).get(event.event_id),
            )
            known[event.event_id] = context
            result.append((event, context))
        return result

    async def persist(self, events: Iterable[Event], backfilled: bool = False) -> int:
        """Compute contexts and persist the events as one request."""
        items = await self.contexts_for(list(events))
        return await self.persister.persist_events(items, backfilled=backfilled)

    async def persist_each(self, events: Iterable[Event]) -> None:
        for event in events:
            await self.persist([event])

    async def count(self, table: str, where: str = "TRUE", *args: Any) -> int:
        rows = await self.db.execute("count", f"SELECT COUNT(*) FROM {table} WHERE {where}", *args)
        return int(rows[0][0])

    async def snapshot(self, tables: Iterable[str]) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of the given tables, sorted: to compare before and after."""
        result = {}
        for table in tables:
            rows = await self.db.execute("snapshot", f"SELECT * FROM {table}")
            result[table] = sorted(tuple(str(v) for v in r) for r in rows)
        return result


class StatementCounter:
    """Counts SQL statements and transactions run on a pool (a spy, not a fake).

    Every ``Transaction.execute`` passes its SQL through the engine's
    ``convert_sql``, so wrapping that sees every statement.
    """

    def __init__(self, db: DatabasePool) -> None:
        self.db = db
        self.statements: list[str] = []
        self.transactions: list[str] = []

    def __enter__(self) -> StatementCounter:
        engine = self.db.engine
        self._convert = engine.convert_sql
        self._run = self.db.run_interaction

        def convert(sql: str) -> str:
            self.statements.append(sql)
            return self._convert(sql)

        def run_interaction(desc: str, func: Any, *args: Any, **kwargs: Any) -> Any:
            self.transactions.append(desc)
            return self._run(desc, func, *args, **kwargs)

        engine.convert_sql = convert  # type: ignore[method-assign]
        self.db.run_interaction = run_interaction  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        del self.db.engine.convert_sql
        del self.db.run_interaction
