"""SQLite, the embedded default: one connection, one writer thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

from atrium.storage.engines.base import BaseEngine


class SqliteEngine(BaseEngine):
    name = "sqlite"
    # SQLite serialises writers anyway; one connection avoids "database is
    # locked" errors and lets ":memory:" databases work.
    supports_concurrent_writers = False

    def __init__(self, path: str) -> None:
        self.path = path

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.on_new_connection(conn)
        return conn

    def on_new_connection(self, conn: Any) -> None:
        cur = conn.cursor()
        # WAL lets readers (other processes, e.g. `atrium status`) see a
        # consistent snapshot while we write; NORMAL sync is crash-safe in WAL.
        if self.path != ":memory:":
            cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = OFF")
        cur.execute("PRAGMA cache_size = -16000")
        cur.close()

    def convert_sql(self, sql: str) -> str:
        return sql

    def is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)

    def is_connection_lost(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc)

    def in_clause(self, column: str, values: Collection[Any]) -> tuple[str, list[Any]]:
        values = list(values)
        if not values:
            return "FALSE", []
        return f"{column} IN ({','.join('?' * len(values))})", values

    def insert_many(
        self, cursor: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        if not rows:
            return
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        cursor.executemany(sql, rows)

    def describe(self) -> str:
        return f"sqlite:{self.path}"
