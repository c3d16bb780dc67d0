"""Schema versions at start-up (rolling upgrades): the commands operators run.

- ``atrium migrate`` brings a database to this Atrium's schema and says so;
  a second run has nothing to do.
- A database migrated by a NEWER Atrium (an upgrade rolled back, or an old
  process restarted mid-upgrade): every command refuses with one line naming
  both versions and exit status 2, never a traceback.
- A database OLDER than a worker needs: the worker refuses and says to run
  ``atrium migrate`` with the version it needs; after the migration it starts
  its checks, and a later newer-than-supported schema stops it again.
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import psycopg2
import pytest

from atrium.storage.migrations import latest_version
from tests.conftest import POSTGRES_URL, REDIS_URL, requires_postgres
from tests.support.db import create_postgres_database, drop_postgres_database
from tests.support.process import ATRIUM, free_port, generate

pytestmark = pytest.mark.slow


def _atrium(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ATRIUM, *args], capture_output=True, text=True, timeout=60)


def _one_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("atrium:")]
    assert len(lines) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_migrate_then_refuse_a_schema_newer_than_this_atrium(tmp_path):
    config = generate(tmp_path / "hs", "schema.test", free_port())
    latest = latest_version("sqlite")
    first = _atrium("migrate", "-c", str(config))
    assert first.returncode == 0, first.stderr
    assert f"schema version 0 -> {latest}" in first.stdout
    again = _atrium("migrate", "-c", str(config))
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout

    # What a newer Atrium's migration leaves behind.
    with sqlite3.connect(tmp_path / "hs" / "homeserver.db") as conn:
        conn.execute(
            "INSERT INTO schema_version (version, name, applied_ts) VALUES (?, 'from_the_future', 0)",
            (latest + 1,),
        )
    needles = (f"version {latest + 1}", f"supports ({latest})")
    _one_line(_atrium("run", "-c", str(config)), *needles)
    _one_line(_atrium("migrate", "-c", str(config)), *needles)
    _one_line(
        _atrium("register-user", "-c", str(config), "--user", "a", "--password", "pw"), *needles
    )


def _worker_config(tmp_path: Path, db_url: str) -> tuple[Path, Path]:
    config = generate(
        tmp_path / "hs",
        "schema.test",
        free_port(),
        "--database-url",
        db_url,
        "--redis-url",
        REDIS_URL,
        "--workers",
        "sync:1",
    )
    return config, config.parent / "workers" / "sync1.yaml"


@requires_postgres
def test_workers_refuse_older_and_newer_schemas(tmp_path):
    db_url = create_postgres_database(POSTGRES_URL)
    try:
        config, worker = _worker_config(tmp_path, db_url)
        latest = latest_version("postgres")
        # Older: a database no Atrium has migrated yet (version 0).
        conn = psycopg2.connect(db_url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE schema_version ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ts BIGINT NOT NULL)"
            )
        line = _one_line(_atrium("worker", "-c", str(config), "-c", str(worker)), "atrium migrate")
        assert f"needs {latest}" in line
        assert _atrium("migrate", "-c", str(config)).returncode == 0
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO schema_version (version, name, applied_ts) VALUES (%s, 'next', 0)",
                (latest + 1,),
            )
        conn.close()
        _one_line(
            _atrium("worker", "-c", str(config), "-c", str(worker)),
            f"version {latest + 1}",
            "upgrade Atrium",
        )
    finally:
        drop_postgres_database(POSTGRES_URL, db_url)
