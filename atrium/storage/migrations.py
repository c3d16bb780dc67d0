"""Applies the numbered schema files in ``atrium/storage/schema/`` in order.

Applied versions are recorded in ``schema_version``; each file runs in one
transaction together with its record, so a failed migration leaves nothing
behind. On PostgreSQL an advisory lock stops two processes starting at once
from migrating together.
"""

from __future__ import annotations

import logging
import re
import time
from importlib import resources

import attrs

from atrium.storage.database import DatabasePool, Transaction

logger = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+?)(?:\.(sqlite|postgres))?\.sql$")
# An arbitrary constant identifying "Atrium schema migration" advisory locks.
_ADVISORY_LOCK_ID = 0x41545249


class SchemaOutdatedError(Exception):
    """The database needs migrations this process was told not to apply."""


class SchemaTooNewError(Exception):
    """The database was migrated by a newer Atrium than this one."""


@attrs.frozen
class Migration:
    version: int
    name: str
    sql: str


def available_migrations(engine_name: str) -> list[Migration]:
    """Every migration for an engine, in version order."""
    plain: dict[int, tuple[str, str]] = {}
    specific: dict[int, tuple[str, str]] = {}
    for entry in resources.files("atrium.storage.schema").iterdir():
        match = _FILE.match(entry.name)
        if not match:
            continue
        version, name, variant = int(match.group(1)), match.group(2), match.group(3)
        text = entry.read_text(encoding="utf-8")
        if variant is None:
            plain[version] = (name, text)
        elif variant == engine_name:
            specific[version] = (name, text)
    merged = {**plain, **specific}
    return [Migration(v, merged[v][0], merged[v][1]) for v in sorted(merged)]


def latest_version(engine_name: str) -> int:
    migrations = available_migrations(engine_name)
    return migrations[-1].version if migrations else 0


def split_statements(sql: str) -> list[str]:
    """Split a schema file into statements (no semicolons inside literals)."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]


def _ensure_version_table(txn: Transaction) -> None:
    txn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ts BIGINT NOT NULL)"
    )


def _current_version_txn(txn: Transaction) -> int:
    _ensure_version_table(txn)
    row = txn.select_one("SELECT MAX(version) FROM schema_version")
    return int(row[0]) if row and row[0] is not None else 0


async def current_version(db: DatabasePool) -> int:
    return await db.run_interaction("schema_current_version", _current_version_txn)


async def prepare_database(db: DatabasePool, allow_migrate: bool = True) -> int:
    """Bring the schema up to date (or check it is); returns the version.

    With ``allow_migrate=False`` a database needing migrations raises
    SchemaOutdatedError telling the operator to run ``atrium migrate``.
    """
    migrations = available_migrations(db.engine.name)
    latest = migrations[-1].version if migrations else 0
    version = await current_version(db)
    if version > latest:
        raise SchemaTooNewError(
            f"database schema version {version} is newer than this Atrium supports ({latest}); upgrade Atrium"
        )
    pending = [m for m in migrations if m.version > version]
    if not pending:
        return version
    if not allow_migrate:
        raise SchemaOutdatedError(
            f"database schema is at version {version} but this Atrium needs {latest}:"
            " run `atrium migrate -c <config>` first"
        )
    for migration in pending:
        await db.run_interaction(f"migrate_{migration.version:04d}", _apply_txn, migration)
    return latest


def _apply_txn(txn: Transaction, migration: Migration) -> None:
    if txn.engine.name == "postgres":
        txn.execute("SELECT pg_advisory_xact_lock(?)", (_ADVISORY_LOCK_ID,))
    # Another process may have applied it while we waited for the lock.
    if _current_version_txn(txn) >= migration.version:
        return
    logger.info("applying schema migration %04d_%s", migration.version, migration.name)
    for statement in split_statements(migration.sql):
        txn.execute(statement)
    txn.execute(
        "INSERT INTO schema_version (version, name, applied_ts) VALUES (?, ?, ?)",
        (migration.version, migration.name, int(time.time() * 1000)),
    )
