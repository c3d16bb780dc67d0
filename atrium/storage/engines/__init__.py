"""Database engines: the few places SQLite and PostgreSQL differ.

Stores write one SQL dialect (``?`` placeholders, ``ON CONFLICT`` upserts,
``TRUE``/``FALSE``); an engine adapts that text to its driver and knows how to
connect, how to recognise retryable errors and how to express ``IN`` lists.
"""

from __future__ import annotations

from urllib.parse import urlparse

from atrium.storage.engines.base import BaseEngine
from atrium.storage.engines.postgres import PostgresEngine
from atrium.storage.engines.sqlite import SqliteEngine


def create_engine(database: str) -> BaseEngine:
    """An engine for a database URL: ``postgresql://...`` or a SQLite path.

    ``sqlite:///path``, a bare path and ``:memory:`` all mean SQLite.
    """
    if database.startswith(("postgresql://", "postgres://")):
        return PostgresEngine(database)
    if database.startswith("sqlite://"):
        path = urlparse(database).path or ":memory:"
        if database.startswith("sqlite:///"):
            path = database[len("sqlite://") :]
        return SqliteEngine(path)
    return SqliteEngine(database)


__all__ = ["BaseEngine", "PostgresEngine", "SqliteEngine", "create_engine"]
