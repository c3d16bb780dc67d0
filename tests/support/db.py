"""Throwaway databases for tests: a SQLite file or a fresh PostgreSQL database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import psycopg2

from atrium.storage.database import DatabasePool
from atrium.storage.engines import create_engine
from atrium.storage.migrations import prepare_database


def _admin_connect(server_url: str):
    conn = psycopg2.connect(server_url)
    conn.autocommit = True
    return conn


def create_postgres_database(server_url: str) -> str:
    """Create an empty database on the server; returns its URL."""
    name = f"atrium_test_{uuid.uuid4().hex[:16]}"
    conn = _admin_connect(server_url)
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    parsed = urlparse(server_url)
    return urlunparse(parsed._replace(path="/" + name))


def drop_postgres_database(server_url: str, db_url: str) -> None:
    name = urlparse(db_url).path.lstrip("/")
    conn = _admin_connect(server_url)
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()


@asynccontextmanager
async def make_database(
    kind: str, tmp_path: Path, postgres_server: str, migrate: bool = True
) -> AsyncIterator[DatabasePool]:
    """A migrated DatabasePool of the given kind, removed afterwards."""
    from twisted.internet import reactor

    db_url = None
    if kind == "postgres":
        db_url = create_postgres_database(postgres_server)
        engine = create_engine(db_url)
    else:
        engine = create_engine(str(tmp_path / f"atrium-{uuid.uuid4().hex[:8]}.db"))
    pool = DatabasePool(engine, reactor)
    pool.start()
    try:
        if migrate:
            await prepare_database(pool)
        yield pool
    finally:
        pool.close()
        if db_url is not None:
            drop_postgres_database(postgres_server, db_url)
