"""PostgreSQL through psycopg2: a pool of connections, one per thread."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from atrium.storage.engines.base import BaseEngine

# Placeholders outside string literals: '?' becomes '%s', and literal '%'
# must be doubled for psycopg2's paramstyle.
_TOKEN = re.compile(r"'(?:[^']|'')*'|\?|%")


class PostgresEngine(BaseEngine):
    name = "postgres"
    supports_concurrent_writers = True

    def __init__(self, url: str) -> None:
        self.url = url
        self._converted: dict[str, str] = {}

    def connect(self) -> Any:
        conn = psycopg2.connect(self.url)
        self.on_new_connection(conn)
        return conn

    def on_new_connection(self, conn: Any) -> None:
        conn.set_session(
            isolation_level=psycopg2.extensions.ISOLATION_LEVEL_READ_COMMITTED, autocommit=False
        )

    def convert_sql(self, sql: str) -> str:
        converted = self._converted.get(sql)
        if converted is None:
            converted = _TOKEN.sub(_replace_token, sql)
            self._converted[sql] = converted
        return converted

    def is_retryable(self, exc: BaseException) -> bool:
        return isinstance(
            exc, psycopg2.errors.SerializationFailure | psycopg2.errors.DeadlockDetected
        )

    def is_connection_lost(self, exc: BaseException) -> bool:
        return isinstance(
            exc, psycopg2.InterfaceError | psycopg2.OperationalError
        ) and not self.is_retryable(exc)

    def in_clause(self, column: str, values: Collection[Any]) -> tuple[str, list[Any]]:
        # One array parameter instead of N placeholders: the statement text
        # stays the same whatever the list length.
        return f"{column} = ANY(?)", [list(values)]

    def insert_many(
        self, cursor: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        if not rows:
            return
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES %s"
        psycopg2.extras.execute_values(cursor, sql, rows, page_size=500)

    def describe(self) -> str:
        return "postgres:" + re.sub(r"//[^@/]*@", "//", self.url)


def _replace_token(match: re.Match[str]) -> str:
    token = match.group(0)
    if token == "?":
        return "%s"
    if token == "%":
        return "%%"
    return token.replace("%", "%%")
