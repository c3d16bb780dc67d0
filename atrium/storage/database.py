"""The database pool: transactions run in a thread pool, off the reactor.

``run_interaction(desc, func, *args)`` runs ``func(txn, *args)`` inside one
transaction on a pool thread and returns an awaitable for its result. The
transaction is retried on serialization failures and deadlocks, and reopened
once if the connection was lost. Functions registered with ``txn.call_after``
run on the reactor thread after a successful commit (cache invalidation must
not happen before the data is visible to other readers).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from prometheus_client import Counter, Histogram
from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorCore, IReactorThreads
from twisted.python.threadpool import ThreadPool

from atrium.storage.engines.base import BaseEngine

logger = logging.getLogger(__name__)

R = TypeVar("R")

TXN_SECONDS = Histogram(
    "atrium_db_transaction_seconds",
    "Time spent running a database transaction, by description",
    ["desc"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TXN_RETRIES = Counter(
    "atrium_db_transaction_retries_total", "Transactions retried", ["desc", "reason"]
)
TXN_QUEUE_SECONDS = Histogram(
    "atrium_db_scheduling_seconds",
    "Time a transaction waited for a pool thread",
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
)

MAX_RETRIES = 5
# Chunk size for IN lists on SQLite, well under its variable limit.
IN_LIST_CHUNK = 500


class Transaction:
    """A cursor that speaks Atrium's SQL dialect, plus after-commit hooks."""

    __slots__ = ("cursor", "engine", "desc", "after_callbacks", "exception_callbacks")

    def __init__(self, cursor: Any, engine: BaseEngine, desc: str) -> None:
        self.cursor = cursor
        self.engine = engine
        self.desc = desc
        self.after_callbacks: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.exception_callbacks: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    # -- running SQL --------------------------------------------------------
    def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        self.cursor.execute(self.engine.convert_sql(sql), tuple(args))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.cursor.executemany(self.engine.convert_sql(sql), list(rows))

    def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        self.engine.insert_many(self.cursor, table, columns, rows)

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.cursor.fetchone()

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.cursor.fetchall()

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.cursor.fetchall())

    @property
    def rowcount(self) -> int:
        return self.cursor.rowcount

    # -- hooks ----------------------------------------------------------------
    def call_after(self, func: Callable[..., Any], *args: Any) -> None:
        """Run ``func(*args)`` on the reactor thread once this transaction commits."""
        self.after_callbacks.append((func, args))

    def call_on_exception(self, func: Callable[..., Any], *args: Any) -> None:
        """Run ``func(*args)`` if this transaction fails for good."""
        self.exception_callbacks.append((func, args))

    # -- small helpers most stores need ----------------------------------------
    def select_one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        self.execute(sql, args)
        return self.cursor.fetchone()

    def select_all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.execute(sql, args)
        return self.cursor.fetchall()

    def select_many(
        self, sql_template: str, column: str, values: Collection[Any], args: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Run ``sql_template`` (containing ``{in}``) for a long list of values.

        ``{in}`` becomes the engine's membership test for ``column``; the
        fixed ``args`` come after the list arguments. Long lists are chunked
        so SQLite's variable limit is never hit.
        """
        values = list(values)
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(values), IN_LIST_CHUNK):
            clause, in_args = self.engine.in_clause(column, values[start : start + IN_LIST_CHUNK])
            self.execute(sql_template.format(**{"in": clause}), [*in_args, *args])
            rows.extend(self.cursor.fetchall())
        return rows

    def upsert(
        self,
        table: str,
        keyvalues: Mapping[str, Any],
        values: Mapping[str, Any],
    ) -> None:
        """Insert a row, or update ``values`` where ``keyvalues`` already exist."""
        cols = [*keyvalues, *values]
        sql = (
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            f" ON CONFLICT ({', '.join(keyvalues)}) DO "
        )
        if values:
            sql += "UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in values)
        else:
            sql += "NOTHING"
        self.execute(sql, [*keyvalues.values(), *values.values()])


class DatabasePool:
    """Runs transactions for one database on a pool of threads."""

    def __init__(
        self,
        engine: BaseEngine,
        reactor: Any,
        name: str = "main",
        max_connections: int = 5,
    ) -> None:
        self.engine = engine
        self.reactor = reactor
        self.name = name
        self._pool_size = max_connections if engine.supports_concurrent_writers else 1
        self._threadpool = self._new_threadpool()
        self._local = threading.local()
        self._connections: list[Any] = []
        self._connections_lock = threading.Lock()
        self._started = False

    def _new_threadpool(self) -> ThreadPool:
        return ThreadPool(minthreads=1, maxthreads=self._pool_size, name=f"db-{self.name}")

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self._threadpool.joined:
            # Closed before: a stopped ThreadPool cannot be started again.
            self._threadpool = self._new_threadpool()
        self._threadpool.start()
        if IReactorCore.providedBy(self.reactor):
            self._shutdown_trigger = self.reactor.addSystemEventTrigger(
                "during", "shutdown", self.close
            )

    def close(self) -> None:
        """Stop the threads and close every connection."""
        if not self._started:
            return
        self._started = False
        trigger, self._shutdown_trigger = getattr(self, "_shutdown_trigger", None), None
        if trigger is not None:
            # Closed before the reactor stops: nothing left to do at shutdown.
            # (When this IS the shutdown trigger, it is no longer registered.)
            try:
                self.reactor.removeSystemEventTrigger(trigger)
            except (KeyError, ValueError):
                pass
        self._threadpool.stop()
        with self._connections_lock:
            for conn in self._connections:
                try:
                    conn.close()
                except Exception:
                    pass
            self._connections.clear()

    # -- connections --------------------------------------------------------------
    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.engine.connect()
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._connections_lock:
                if conn in self._connections:
                    self._connections.remove(conn)
            try:
                conn.close()
            except Exception:
                pass

    # -- transactions -------------------------------------------------------------
    def run_interaction(
        self, desc: str, func: Callable[..., R], *args: Any, **kwargs: Any
    ) -> defer.Deferred[R]:
        """Run ``func(txn, *args, **kwargs)`` in a transaction on a pool thread."""
        if not self._started:
            self.start()
        queued_at = time.monotonic()

        def in_thread() -> tuple[R, list[tuple[Callable[..., Any], tuple[Any, ...]]]]:
            TXN_QUEUE_SECONDS.observe(time.monotonic() - queued_at)
            return self._run_txn(desc, func, args, kwargs)

        d = threads.deferToThreadPool(self.reactor, self._threadpool, in_thread)

        def after_commit(outcome: tuple[R, list[tuple[Callable[..., Any], tuple[Any, ...]]]]) -> R:
            result, callbacks = outcome
            for cb, cb_args in callbacks:
                try:
                    cb(*cb_args)
                except Exception:
                    logger.exception("after-commit callback of %s failed", desc)
            return result

        d.addCallback(after_commit)
        return d

    def _run_txn(
        self, desc: str, func: Callable[..., R], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[R, list[tuple[Callable[..., Any], tuple[Any, ...]]]]:
        attempt = 0
        reconnected = False
        while True:
            conn = self._connection()
            start = time.monotonic()
            txn: Transaction | None = None
            try:
                cursor = conn.cursor()
                if self.engine.name == "sqlite":
                    cursor.execute("BEGIN")
                txn = Transaction(cursor, self.engine, desc)
                result = func(txn, *args, **kwargs)
                conn.commit()
                cursor.close()
                return result, txn.after_callbacks
            except Exception as exc:
                self._rollback(conn)
                if self.engine.is_retryable(exc) and attempt < MAX_RETRIES:
                    attempt += 1
                    TXN_RETRIES.labels(desc, "serialization").inc()
                    logger.debug("[%s] retrying after %s (attempt %d)", desc, exc, attempt)
                    time.sleep(0.005 * attempt)
                    continue
                if self.engine.is_connection_lost(exc) and not reconnected:
                    reconnected = True
                    TXN_RETRIES.labels(desc, "reconnect").inc()
                    logger.warning("[%s] database connection lost (%s); reconnecting", desc, exc)
                    self._drop_connection()
                    continue
                if txn is not None:
                    for cb, cb_args in txn.exception_callbacks:
                        try:
                            cb(*cb_args)
                        except Exception:
                            logger.exception("exception callback of %s failed", desc)
                raise
            finally:
                TXN_SECONDS.labels(desc).observe(time.monotonic() - start)

    def _rollback(self, conn: Any) -> None:
        try:
            conn.rollback()
        except Exception:
            # The connection is probably gone; the next attempt reconnects.
            self._drop_connection()

    async def execute(self, desc: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run one read query in its own transaction and return all rows."""

        def txn_fn(txn: Transaction) -> list[tuple[Any, ...]]:
            txn.execute(sql, args)
            return txn.fetchall() if txn.cursor.description else []

        return await self.run_interaction(desc, txn_fn)


def make_pool(engine: BaseEngine, reactor: Any | None = None, **kwargs: Any) -> DatabasePool:
    """A DatabasePool on the given (or the global) reactor."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    assert IReactorThreads.providedBy(reactor)
    return DatabasePool(engine, reactor, **kwargs)
