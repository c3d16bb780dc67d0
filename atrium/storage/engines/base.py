"""The engine interface shared by SQLite and PostgreSQL."""

from __future__ import annotations

import abc
from collections.abc import Collection, Sequence
from typing import Any


class BaseEngine(abc.ABC):
    """What DatabasePool needs to know about one kind of database."""

    name: str
    # Whether several connections may write at once (decides the pool size).
    supports_concurrent_writers: bool

    @abc.abstractmethod
    def connect(self) -> Any:
        """Open a new DB-API connection, ready for use."""

    @abc.abstractmethod
    def convert_sql(self, sql: str) -> str:
        """Adapt Atrium's SQL text (``?`` placeholders) to the driver."""

    @abc.abstractmethod
    def is_retryable(self, exc: BaseException) -> bool:
        """True for serialization failures and deadlocks worth retrying."""

    @abc.abstractmethod
    def is_connection_lost(self, exc: BaseException) -> bool:
        """True when the connection is unusable and must be reopened."""

    @abc.abstractmethod
    def in_clause(self, column: str, values: Collection[Any]) -> tuple[str, list[Any]]:
        """SQL and arguments testing ``column`` against a list of values."""

    @abc.abstractmethod
    def insert_many(
        self, cursor: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Insert many rows in as few round trips as the driver allows."""

    @abc.abstractmethod
    def on_new_connection(self, conn: Any) -> None:
        """Per-connection set-up (pragmas, isolation level)."""

    def describe(self) -> str:
        return self.name
