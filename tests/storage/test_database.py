"""DatabasePool and engines: one SQL dialect on both engines, retries, hooks."""

from __future__ import annotations

import pytest
import pytest_twisted

from atrium.storage.engines import PostgresEngine, SqliteEngine, create_engine
from atrium.storage.migrations import (
    SchemaOutdatedError,
    available_migrations,
    current_version,
    latest_version,
    prepare_database,
    split_statements,
)
from tests.conftest import POSTGRES_URL
from tests.support.db import make_database


def test_postgres_placeholders_and_percent_signs_are_converted():
    engine = PostgresEngine("postgresql://x@h/db")
    assert engine.convert_sql("SELECT a FROM t WHERE b = ? AND c LIKE '%?%'") == (
        "SELECT a FROM t WHERE b = %s AND c LIKE '%%?%%'"
    )
    assert engine.convert_sql("SELECT 5 % 2, ?") == "SELECT 5 %% 2, %s"


def test_create_engine_picks_by_url():
    assert isinstance(create_engine("postgresql://u@h/d"), PostgresEngine)
    assert isinstance(create_engine("/tmp/x.db"), SqliteEngine)
    assert create_engine("sqlite:///tmp/y.db").path == "/tmp/y.db"


def test_schema_files_split_into_statements():
    stmts = split_statements("-- comment\nCREATE TABLE a (x INT);\n\nCREATE INDEX i ON a (x);\n")
    assert stmts == ["CREATE TABLE a (x INT)", "CREATE INDEX i ON a (x)"]


def test_both_engines_share_version_numbers():
    assert [m.version for m in available_migrations("sqlite")] == [
        m.version for m in available_migrations("postgres")
    ]


@pytest_twisted.ensureDeferred
async def test_round_trip_with_upsert_and_booleans(db):
    def write(txn):
        txn.execute(
            "INSERT INTO rooms (room_id, room_version, is_public) VALUES (?, ?, ?)",
            ("!a:x", "10", True),
        )
        txn.upsert("rooms", {"room_id": "!a:x"}, {"room_version": "11"})
        txn.upsert("rooms", {"room_id": "!b:x"}, {"room_version": "9", "is_public": False})

    await db.run_interaction("write", write)
    rows = await db.execute(
        "read", "SELECT room_id, room_version, is_public FROM rooms ORDER BY room_id"
    )
    assert [(r[0], r[1], bool(r[2])) for r in rows] == [("!a:x", "11", True), ("!b:x", "9", False)]


@pytest_twisted.ensureDeferred
async def test_select_many_chunks_long_lists(db):
    ids = [f"$e{i}" for i in range(1234)]

    def write(txn):
        txn.insert_many(
            "event_forward_extremities", ("room_id", "event_id"), [("!r:x", i) for i in ids]
        )

    await db.run_interaction("write", write)

    def read(txn):
        return txn.select_many(
            "SELECT event_id FROM event_forward_extremities WHERE {in} AND room_id = ?",
            "event_id",
            ids[::2],
            ("!r:x",),
        )

    rows = await db.run_interaction("read", read)
    assert sorted(r[0] for r in rows) == sorted(ids[::2])


@pytest_twisted.ensureDeferred
async def test_failed_transaction_rolls_back_and_skips_after_commit_hooks(db):
    calls = []

    def failing(txn):
        txn.execute("INSERT INTO rooms (room_id, room_version) VALUES (?, ?)", ("!gone:x", "10"))
        txn.call_after(calls.append, "after")
        txn.call_on_exception(calls.append, "exception")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await db.run_interaction("failing", failing)
    assert calls == ["exception"]
    assert await db.execute("read", "SELECT room_id FROM rooms WHERE room_id = ?", "!gone:x") == []

    def ok(txn):
        txn.call_after(calls.append, "after")

    await db.run_interaction("ok", ok)
    assert calls == ["exception", "after"]


@pytest.mark.postgres
@pytest_twisted.ensureDeferred
async def test_serialization_failures_are_retried(tmp_path):
    from tests.conftest import POSTGRES_AVAILABLE

    if not POSTGRES_AVAILABLE:
        pytest.skip("PostgreSQL unreachable")
    attempts = []

    def flaky(txn):
        attempts.append(1)
        if len(attempts) < 3:
            # A real SQLSTATE 40001 from the server, as a conflicting
            # concurrent transaction would produce.
            txn.execute("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$")
        return "done"

    async with make_database("postgres", tmp_path, POSTGRES_URL) as pool:
        assert await pool.run_interaction("flaky", flaky) == "done"
    assert len(attempts) == 3


@pytest_twisted.ensureDeferred
async def test_migrations_are_recorded_and_idempotent(db):
    assert await current_version(db) == latest_version(db.engine.name)
    assert await prepare_database(db) == latest_version(db.engine.name)


@pytest_twisted.ensureDeferred
async def test_unmigrated_database_refuses_to_start_without_migrate(db_kind, tmp_path):
    async with make_database(db_kind, tmp_path, POSTGRES_URL, migrate=False) as pool:
        with pytest.raises(SchemaOutdatedError, match="atrium migrate"):
            await prepare_database(pool, allow_migrate=False)
        assert await prepare_database(pool) == latest_version(pool.engine.name)
        await prepare_database(pool, allow_migrate=False)
