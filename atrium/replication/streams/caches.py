"""The caches stream: cache invalidations made by one process, replayed by the others.

Every store write invalidates through ``CacheInvalidator.invalidate(cache_name,
keys)`` (``atrium/storage/stores/invalidation.py``), and a change of a room's
current state is ONE such call naming the cache and all its keys. When other
processes exist, ``ReplicatingCacheInvalidator`` wraps the local invalidator:
it invalidates here at once and queues a row ``(cache_name, keys,
invalidation_ts)``; the replication command handler then writes queued rows to
``cache_invalidation_stream`` and publishes them, in its single outbound
queue, before anything published after the invalidation (an events row,
say). Other processes apply the row by invalidating the same keys.

Several processes write this stream, each in its own id space (rows are
keyed by ``(instance_name, stream_id)``), so positions are per instance like
every other stream.

Why a consumer applies a writer's caches rows before the events rows that
need them, in every case:
- live: the invalidation is queued (in the store's after-commit callback)
  before the writer publishes the events rows, the writer's one outbound
  queue sends in that order over one ordered channel, and the consumer
  handles commands one at a time in arrival order;
- after a gap or reconnect: the writer answers REPLICATE from the same
  queue, so every caches row queued before the answer is written and sent
  first; the answer names the caches stream first, and the consumer catches
  up each POSITION fully before handling the next, so caches are caught up
  before events;
- at start-up: positions are loaded from the database before subscribing and
  the process has nothing cached, so a caches row it has not applied yet can
  only concern data it has not read yet; the row arrives live or by
  catch-up before the process answers requests (the service waits for the
  writers' REPLICATE answers).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Hashable, Iterable, Sequence
from typing import Any

import attrs

from atrium.replication.streams import register_stream
from atrium.replication.streams._base import Effects, Stream, StreamRow, StreamUpdates
from atrium.storage.database import DatabasePool, Transaction
from atrium.storage.id_generators import StreamIdGenerator
from atrium.storage.stores.invalidation import CacheInvalidator
from atrium.util.clock import Clock

logger = logging.getLogger(__name__)

Key = tuple[Hashable, ...]


@attrs.frozen
class CachesStreamRow(StreamRow):
    cache_name: str
    # Each key is the list of the cached method's arguments; None = whole cache.
    keys: list[list[Any]] | None
    invalidation_ts: int

    @classmethod
    def from_json(cls, data: list[Any]) -> CachesStreamRow:
        if not isinstance(data, list) or len(data) != 3:
            raise ValueError("a caches row is [cache_name, keys, invalidation_ts]")
        name, keys, ts = data
        if not isinstance(name, str) or not isinstance(ts, int):
            raise ValueError("bad cache_name or invalidation_ts in caches row")
        if keys is not None and not (
            isinstance(keys, list) and all(isinstance(k, list) for k in keys)
        ):
            raise ValueError("caches row keys must be a list of lists or null")
        return cls(name, keys, ts)


def _as_key(value: Any) -> Any:
    # JSON turned tuples into lists; cache keys are tuples all the way down.
    return tuple(_as_key(v) for v in value) if isinstance(value, list) else value


@register_stream
class CachesStream(Stream):
    NAME = "caches"
    ROW_TYPE = CachesStreamRow

    def current_token(self, instance_name: str) -> int:
        invalidator = getattr(self.hs, "invalidator", None)
        if (
            isinstance(invalidator, ReplicatingCacheInvalidator)
            and invalidator.instance_name == instance_name
        ):
            return invalidator.current_token()
        return 0

    async def get_updates(
        self, instance_name: str, from_token: int, to_token: int, limit: int
    ) -> StreamUpdates:
        return await get_cache_invalidations(self.hs.db, instance_name, from_token, to_token, limit)

    async def stored_positions(self) -> dict[str, int] | None:
        # Each process writes its rows one flush at a time, in order.
        rows = await self.hs.db.execute(
            "caches_stream_positions",
            "SELECT instance_name, MAX(stream_id) FROM cache_invalidation_stream"
            " GROUP BY instance_name",
        )
        return {r[0]: int(r[1]) for r in rows}

    async def effects(self, rows: Iterable[StreamRow]) -> Effects:
        effects = Effects()
        for row in rows:
            assert isinstance(row, CachesStreamRow)
            keys = None if row.keys is None else [_as_key(k) for k in row.keys]
            effects.invalidations.append((row.cache_name, keys))
        return effects

    def parse_row(self, data: list[Any]) -> StreamRow:
        return CachesStreamRow.from_json(data)


async def get_cache_invalidations(
    db: DatabasePool, instance_name: str, from_token: int, to_token: int, limit: int
) -> StreamUpdates:
    """Rows of ``instance_name`` with from_token < stream_id <= to_token, oldest first."""
    rows = await db.execute(
        "caches_stream_updates",
        "SELECT stream_id, cache_name, cache_keys, invalidation_ts"
        " FROM cache_invalidation_stream"
        " WHERE instance_name = ? AND stream_id > ? AND stream_id <= ?"
        " ORDER BY stream_id LIMIT ?",
        instance_name,
        from_token,
        to_token,
        limit,
    )
    updates: list[tuple[int, StreamRow]] = [
        (int(r[0]), CachesStreamRow(r[1], None if r[2] is None else json.loads(r[2]), int(r[3])))
        for r in rows
    ]
    limited = len(updates) == limit
    upto = updates[-1][0] if limited else to_token
    return StreamUpdates(updates, upto, limited)


@attrs.define
class _Pending:
    row: CachesStreamRow
    keys_json: str | None


class ReplicatingCacheInvalidator:
    """Invalidates locally and queues a caches-stream row for the other processes.

    ``flush()`` (called by the replication command handler from its outbound
    queue) allocates stream ids for the queued rows, writes them and returns
    them for publishing. ``on_pending`` is called after each queued row so
    the handler can schedule that flush in order with what it sends next.
    """

    def __init__(
        self,
        local: CacheInvalidator,
        db: DatabasePool,
        instance_name: str,
        clock: Clock,
        id_gen: StreamIdGenerator,
    ) -> None:
        self.local = local
        self.db = db
        self.instance_name = instance_name
        self.clock = clock
        self._id_gen = id_gen
        self._pending: list[_Pending] = []
        self.on_pending: Any = None

    @classmethod
    async def create(
        cls, local: CacheInvalidator, db: DatabasePool, instance_name: str, clock: Clock
    ) -> ReplicatingCacheInvalidator:
        rows = await db.execute(
            "caches_stream_start",
            "SELECT MAX(stream_id) FROM cache_invalidation_stream WHERE instance_name = ?",
            instance_name,
        )
        current = int(rows[0][0]) if rows and rows[0][0] is not None else 0
        return cls(local, db, instance_name, clock, StreamIdGenerator(current))

    def invalidate(self, cache_name: str, keys: Collection[Key] | None) -> None:
        self.local.invalidate(cache_name, keys)
        key_lists: list[list[Any]] | None = None
        keys_json: str | None = None
        if keys is not None:
            key_lists = [list(k) for k in keys]
            if not key_lists:
                return
            try:
                keys_json = json.dumps(key_lists, separators=(",", ":"))
            except (TypeError, ValueError):
                # A key JSON cannot carry: the other processes drop the whole
                # cache instead, which is only ever a performance cost.
                logger.warning(
                    "Cache %r keys not JSON-serialisable; replicating as 'all'", cache_name
                )
                key_lists = None
        self._pending.append(
            _Pending(CachesStreamRow(cache_name, key_lists, self.clock.time_msec()), keys_json)
        )
        if self.on_pending is not None:
            self.on_pending()

    def invalidate_local(self, cache_name: str, keys: Collection[Key]) -> None:
        """Here only: the other processes get this from another stream's rows."""
        self.local.invalidate(cache_name, keys)

    def has_pending(self) -> bool:
        return bool(self._pending)

    def current_token(self) -> int:
        return self._id_gen.get_current_token()

    async def flush(self) -> list[tuple[int, CachesStreamRow]]:
        """Write every queued row; returns them with their stream ids, in order.

        If the write fails the rows are still returned (and so still
        published): the live processes must hear the invalidation even if a
        later catch-up from the database cannot replay it.
        """
        pending, self._pending = self._pending, []
        if not pending:
            return []
        with self._id_gen.get_next_mult(len(pending)) as ids:
            try:
                await self.db.run_interaction(
                    "cache_invalidation_stream", _insert_txn, self.instance_name, ids, pending
                )
            except Exception:
                logger.exception("Writing %d caches-stream rows failed", len(pending))
        return [(i, p.row) for i, p in zip(ids, pending, strict=True)]

    async def prune(self, before_ts: int) -> int:
        """Delete this process's rows older than ``before_ts`` (keeping its latest row,
        from which the id generator restarts). Returns how many were deleted."""

        def txn_fn(txn: Transaction) -> int:
            txn.execute(
                "DELETE FROM cache_invalidation_stream"
                " WHERE instance_name = ? AND invalidation_ts < ? AND stream_id < ?",
                (self.instance_name, before_ts, self._id_gen.get_current_token()),
            )
            return txn.rowcount

        return await self.db.run_interaction("prune_cache_invalidation_stream", txn_fn)


def _insert_txn(
    txn: Transaction, instance_name: str, ids: Sequence[int], pending: Sequence[_Pending]
) -> None:
    txn.insert_many(
        "cache_invalidation_stream",
        ("instance_name", "stream_id", "cache_name", "cache_keys", "invalidation_ts"),
        [
            (instance_name, i, p.row.cache_name, p.keys_json, p.row.invalidation_ts)
            for i, p in zip(ids, pending, strict=True)
        ],
    )
