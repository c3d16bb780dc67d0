"""Id allocation: stream positions and plain sequences.

``StreamIdGenerator`` hands out increasing stream ids to one writer and knows
the *current token*: the highest id at or below which every allocated id has
finished persisting. Readers must never be told about id N while an id below
N is still being written, or they would skip it forever.

``SequenceGenerator`` gives unique ids with no ordering promise beyond
uniqueness (state groups): a PostgreSQL sequence where several processes may
allocate, an in-memory counter on SQLite (one process).
"""

from __future__ import annotations

import abc
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator, Sequence

from atrium.storage.database import DatabasePool, Transaction


def _max_of(txn: Transaction, tables: Sequence[tuple[str, str]], step: int) -> int:
    best = 0
    for table, column in tables:
        agg = "MAX" if step > 0 else "MIN"
        row = txn.select_one(f"SELECT {agg}({column}) FROM {table}")
        if row and row[0] is not None:
            value = int(row[0])
            best = max(best, value) if step > 0 else min(best, value)
    return best


class StreamIdGenerator:
    """Stream ids for a single writer, with in-flight tracking.

    ``step=-1`` allocates decreasing (negative) ids, used for backfilled
    events that must sort before everything already in the stream.
    """

    def __init__(self, current: int, step: int = 1) -> None:
        if step not in (1, -1):
            raise ValueError("step must be 1 or -1")
        self._step = step
        self._last = current
        self._current = current
        self._unfinished: list[int] = []
        self._lock = threading.Lock()

    @classmethod
    async def from_tables(
        cls, db: DatabasePool, tables: Sequence[tuple[str, str]], step: int = 1
    ) -> StreamIdGenerator:
        """Start after the highest id in any of ``tables`` (table, column)."""
        current = await db.run_interaction("id_generator_start", _max_of, tables, step)
        return cls(current, step)

    @contextlib.contextmanager
    def get_next(self) -> Iterator[int]:
        with self.get_next_mult(1) as ids:
            yield ids[0]

    @contextlib.contextmanager
    def get_next_mult(self, n: int) -> Iterator[list[int]]:
        """Allocate ``n`` ids; they count as finished when the block exits."""
        with self._lock:
            ids = [self._last + self._step * (i + 1) for i in range(n)]
            if ids:
                self._last = ids[-1]
            self._unfinished.extend(ids)
        try:
            yield ids
        finally:
            with self._lock:
                for i in ids:
                    self._unfinished.remove(i)
                self._advance()

    def _advance(self) -> None:
        if self._unfinished:
            first = min(self._unfinished) if self._step > 0 else max(self._unfinished)
            self._current = first - self._step
        else:
            self._current = self._last

    @contextlib.asynccontextmanager
    async def allocate(self, n: int) -> AsyncIterator[list[int]]:
        """``get_next_mult`` with the async interface MultiWriterIdGenerator has."""
        with self.get_next_mult(n) as ids:
            yield ids

    def get_current_token(self) -> int:
        """The highest id such that it and every id before it are finished."""
        return self._current

    def get_last_allocated(self) -> int:
        return self._last


class SequenceGenerator(abc.ABC):
    """Unique ids (no completion tracking) allocated inside transactions."""

    @abc.abstractmethod
    def get_next_id_txn(self, txn: Transaction) -> int: ...

    def get_next_mult_txn(self, txn: Transaction, n: int) -> list[int]:
        return [self.get_next_id_txn(txn) for _ in range(n)]


class LocalSequenceGenerator(SequenceGenerator):
    """An in-memory counter, for databases only one process writes (SQLite)."""

    def __init__(self, current: int) -> None:
        self._current = current
        self._lock = threading.Lock()

    def get_next_id_txn(self, txn: Transaction) -> int:
        with self._lock:
            self._current += 1
            return self._current

    def get_next_mult_txn(self, txn: Transaction, n: int) -> list[int]:
        with self._lock:
            start = self._current + 1
            self._current += n
            return list(range(start, self._current + 1))


class PostgresSequenceGenerator(SequenceGenerator):
    """A PostgreSQL sequence; safe with many processes allocating."""

    def __init__(self, sequence_name: str) -> None:
        self._sequence = sequence_name

    def get_next_id_txn(self, txn: Transaction) -> int:
        row = txn.select_one(f"SELECT nextval('{self._sequence}')")
        assert row is not None
        return int(row[0])

    def get_next_mult_txn(self, txn: Transaction, n: int) -> list[int]:
        rows = txn.select_all(
            f"SELECT nextval('{self._sequence}') FROM generate_series(1, ?)", (n,)
        )
        return [int(r[0]) for r in rows]


async def build_sequence_generator(
    db: DatabasePool, sequence_name: str, table: str, column: str
) -> SequenceGenerator:
    """The right SequenceGenerator for the engine, consistent with ``table``.

    On PostgreSQL the sequence is moved past the table's maximum, in case ids
    were written by other means (restores, older versions).
    """
    if db.engine.name == "postgres":

        def fix_txn(txn: Transaction) -> None:
            current = _max_of(txn, [(table, column)], 1)
            txn.execute(
                f"SELECT setval('{sequence_name}', GREATEST(?, (SELECT last_value FROM {sequence_name})))",
                (max(current, 1),),
            )

        await db.run_interaction("sequence_check", fix_txn)
        return PostgresSequenceGenerator(sequence_name)
    current = await db.run_interaction("sequence_start", _max_of, [(table, column)], 1)
    return LocalSequenceGenerator(current)


class MultiWriterIdGenerator:
    """Stream ids shared by several writer processes (PostgreSQL only).

    Ids come from one PostgreSQL sequence, so they are unique and increase
    across writers. Each writer's *position* is the highest id such that every
    id it allocated at or below it has finished: readers follow each writer
    separately and combine them into a vector token (min + writers ahead).
    """

    def __init__(
        self, db: DatabasePool, sequence_name: str, instance_name: str, position: int
    ) -> None:
        self._db = db
        self._sequence = sequence_name
        self.instance_name = instance_name
        self._position = position
        self._unfinished: set[int] = set()
        self._finished: list[int] = []
        # Allocations under way (ids not yet known here) and how many began.
        self._allocating = 0
        self._allocations_started = 0

    @classmethod
    async def create(
        cls,
        db: DatabasePool,
        sequence_name: str,
        stream_name: str,
        instance_name: str,
        table: str,
        column: str,
    ) -> MultiWriterIdGenerator:
        """Start at this writer's stored position; move the sequence past the table."""

        def start_txn(txn: Transaction) -> int:
            row = txn.select_one(
                "SELECT stream_id FROM stream_positions WHERE stream_name = ? AND instance_name = ?",
                (stream_name, instance_name),
            )
            highest = _max_of(txn, [(table, column)], 1)
            txn.execute(
                f"SELECT setval('{sequence_name}', GREATEST(?, (SELECT last_value FROM {sequence_name})))",
                (max(highest, 1),),
            )
            # Starting up, this writer has nothing in flight (ids a crashed run
            # allocated but never committed are gaps that never appear), so every
            # id of it up to the table's maximum is finished: start there, not
            # at its stored (possibly ancient) position. A vector token's minimum
            # then covers everything written before, by whatever instance.
            return max(int(row[0]) if row else 0, highest)

        position = await db.run_interaction("multi_writer_id_gen_start", start_txn)
        return cls(db, sequence_name, instance_name, position)

    @contextlib.asynccontextmanager
    async def allocate(self, n: int) -> AsyncIterator[list[int]]:
        def alloc_txn(txn: Transaction) -> list[int]:
            rows = txn.select_all(
                f"SELECT nextval('{self._sequence}') FROM generate_series(1, ?)", (n,)
            )
            return sorted(int(r[0]) for r in rows)

        self._allocating += 1
        self._allocations_started += 1
        try:
            ids = await self._db.run_interaction("allocate_stream_ids", alloc_txn) if n else []
        finally:
            self._allocating -= 1
        self._unfinished.update(ids)
        try:
            yield ids
        finally:
            self._unfinished.difference_update(ids)
            self._finished.extend(ids)
            self._advance()

    def _advance(self) -> None:
        limit = min(self._unfinished) if self._unfinished else None
        done = [i for i in self._finished if limit is None or i < limit]
        if done:
            self._position = max(self._position, max(done))
            self._finished = [i for i in self._finished if limit is not None and i >= limit]

    def get_current_token(self) -> int:
        return self._position

    async def advance_idle(self) -> int | None:
        """Move an idle writer's position up to the sequence; the new position, or None.

        A writer that persists nothing keeps its position while the others
        move on, and every vector token's minimum stays behind with it (so
        readers scan ever longer ranges). With nothing of its own in flight,
        no id of this writer at or below the sequence's current value can
        still appear: its position may move there. Gives up if an allocation
        started meanwhile (its ids could be at or below the value read).
        """
        if self._unfinished or self._allocating:
            return None
        started = self._allocations_started

        def read_txn(txn: Transaction) -> int:
            row = txn.select_one(f"SELECT last_value FROM {self._sequence}")
            return int(row[0]) if row else 0

        value = await self._db.run_interaction("stream_sequence_value", read_txn)
        if self._unfinished or self._allocating or self._allocations_started != started:
            return None
        if value <= self._position:
            return None
        self._position = value
        return value
