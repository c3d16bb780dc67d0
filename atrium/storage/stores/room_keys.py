"""RoomKeysStore: server-side key backups (the e2e_room_keys* tables).

Spec: client-server API "Server-side key backups" (key_backup.yaml). The
handler (``atrium.handlers.room_keys``) decides what is allowed; this
module only holds the SQL. Nothing is cached and no stream is written, so
any process may run these writes: versions are numbered by the database
inside the creating transaction, and the replacement rule for a session
key is evaluated by the upsert itself, so two concurrent uploads of one
session cannot both win.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import attrs

from atrium.storage.database import DatabasePool, Transaction


@attrs.frozen
class BackupVersion:
    version: int
    algorithm: str
    auth_data: dict[str, Any]
    etag: int
    count: int


@attrs.frozen
class RoomKey:
    """KeyBackupData of one session (key_backup_data.yaml)."""

    room_id: str
    session_id: str
    first_message_index: int
    forwarded_count: int
    is_verified: bool
    session_data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "first_message_index": self.first_message_index,
            "forwarded_count": self.forwarded_count,
            "is_verified": self.is_verified,
            "session_data": self.session_data,
        }


# The spec's replacement rule ("Server-side key backups"): keep the verified
# key; else the one with the lower first_message_index; else the one with
# the lower forwarded_count. On a tie the stored key stays.
_REPLACE_IF_BETTER = (
    " WHERE (EXCLUDED.is_verified AND NOT e2e_room_keys.is_verified)"
    " OR (EXCLUDED.is_verified = e2e_room_keys.is_verified"
    " AND (EXCLUDED.first_message_index < e2e_room_keys.first_message_index"
    " OR (EXCLUDED.first_message_index = e2e_room_keys.first_message_index"
    " AND EXCLUDED.forwarded_count < e2e_room_keys.forwarded_count)))"
)
_KEY_COLUMNS = (
    "room_id, session_id, first_message_index, forwarded_count, is_verified, session_data"
)


def _count_txn(txn: Transaction, user_id: str, version: int) -> int:
    row = txn.select_one(
        "SELECT COUNT(*) FROM e2e_room_keys WHERE user_id = ? AND version = ?",
        (user_id, version),
    )
    return int(row[0]) if row else 0


def _version_txn(txn: Transaction, user_id: str, version: int | None) -> BackupVersion | None:
    """A live (not deleted) version; None: the latest one."""
    sql = (
        "SELECT version, algorithm, auth_data, etag FROM e2e_room_keys_versions"
        " WHERE user_id = ? AND deleted = FALSE"
    )
    if version is None:
        row = txn.select_one(sql + " ORDER BY version DESC LIMIT 1", (user_id,))
    else:
        row = txn.select_one(sql + " AND version = ?", (user_id, version))
    if row is None:
        return None
    number = int(row[0])
    return BackupVersion(
        number, row[1], json.loads(row[2]), int(row[3]), _count_txn(txn, user_id, number)
    )


def _lock_live_version_txn(txn: Transaction, user_id: str, version: int) -> bool:
    """Lock a live version's row for the rest of the transaction (PostgreSQL
    row lock; SQLite serialises writers anyway); False when it is not live.

    A concurrent deletion then either finishes first (and we see the row as
    deleted) or waits for us: keys are never added to a deleted backup.
    """
    txn.execute(
        "UPDATE e2e_room_keys_versions SET etag = etag"
        " WHERE user_id = ? AND version = ? AND deleted = FALSE",
        (user_id, version),
    )
    return txn.rowcount == 1


def _bump_etag_txn(txn: Transaction, user_id: str, version: int) -> int:
    txn.execute(
        "UPDATE e2e_room_keys_versions SET etag = etag + 1 WHERE user_id = ? AND version = ?",
        (user_id, version),
    )
    return _etag_txn(txn, user_id, version)


def _etag_txn(txn: Transaction, user_id: str, version: int) -> int:
    row = txn.select_one(
        "SELECT etag FROM e2e_room_keys_versions WHERE user_id = ? AND version = ?",
        (user_id, version),
    )
    return int(row[0]) if row else 0


class RoomKeysStore:
    def __init__(self, db: DatabasePool) -> None:
        self.db = db

    # -- versions -------------------------------------------------------------------
    async def create_version(self, user_id: str, algorithm: str, auth_data: Any) -> int:
        """A new backup version, higher than every earlier one of the user
        (deleted ones included); it becomes the current version."""
        auth_json = json.dumps(auth_data)

        def txn_fn(txn: Transaction) -> int:
            while True:
                row = txn.select_one(
                    "SELECT MAX(version) FROM e2e_room_keys_versions WHERE user_id = ?",
                    (user_id,),
                )
                version = (int(row[0]) if row and row[0] is not None else 0) + 1
                # A concurrent creation may take the same number: ON CONFLICT
                # waits for it and skips, and the next MAX (a new statement,
                # a new READ COMMITTED snapshot) sees its row.
                txn.execute(
                    "INSERT INTO e2e_room_keys_versions (user_id, version, algorithm, auth_data)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (user_id, version) DO NOTHING",
                    (user_id, version, algorithm, auth_json),
                )
                if txn.rowcount == 1:
                    return version

        return await self.db.run_interaction("create_room_keys_version", txn_fn)

    async def get_version(self, user_id: str, version: int | None) -> BackupVersion | None:
        """A live version with its key count and etag; None: the latest live one."""
        return await self.db.run_interaction(
            "get_room_keys_version", _version_txn, user_id, version
        )

    async def update_auth_data(self, user_id: str, version: int, auth_data: Any) -> bool:
        """Replace a live version's auth_data; False when it is not live."""
        auth_json = json.dumps(auth_data)

        def txn_fn(txn: Transaction) -> bool:
            txn.execute(
                "UPDATE e2e_room_keys_versions SET auth_data = ?"
                " WHERE user_id = ? AND version = ? AND deleted = FALSE",
                (auth_json, user_id, version),
            )
            return txn.rowcount == 1

        return await self.db.run_interaction("update_room_keys_version", txn_fn)

    async def delete_version(self, user_id: str, version: int) -> bool:
        """Delete a version and its keys; True also when it was deleted
        before (the spec wants that to succeed), False when it never existed."""

        def txn_fn(txn: Transaction) -> bool:
            txn.execute(
                "UPDATE e2e_room_keys_versions SET deleted = TRUE"
                " WHERE user_id = ? AND version = ?",
                (user_id, version),
            )
            if txn.rowcount != 1:
                return False
            txn.execute(
                "DELETE FROM e2e_room_keys WHERE user_id = ? AND version = ?",
                (user_id, version),
            )
            return True

        return await self.db.run_interaction("delete_room_keys_version", txn_fn)

    # -- keys -------------------------------------------------------------------------
    async def put_keys(
        self, user_id: str, version: int, keys: Iterable[RoomKey]
    ) -> tuple[int, int] | None:
        """Store keys in a live version where the replacement rule lets them
        in; (etag, count) afterwards, or None when the version is not live.
        The etag changes only when some stored key changed."""
        rows = [
            (
                user_id,
                version,
                k.room_id,
                k.session_id,
                k.first_message_index,
                k.forwarded_count,
                k.is_verified,
                json.dumps(k.session_data),
            )
            for k in keys
        ]

        def txn_fn(txn: Transaction) -> tuple[int, int] | None:
            if not _lock_live_version_txn(txn, user_id, version):
                return None
            changed = False
            for row in rows:
                txn.execute(
                    f"INSERT INTO e2e_room_keys (user_id, version, {_KEY_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET"
                    " first_message_index = EXCLUDED.first_message_index,"
                    " forwarded_count = EXCLUDED.forwarded_count,"
                    " is_verified = EXCLUDED.is_verified,"
                    " session_data = EXCLUDED.session_data" + _REPLACE_IF_BETTER,
                    row,
                )
                changed = changed or txn.rowcount > 0
            etag = (
                _bump_etag_txn(txn, user_id, version)
                if changed
                else _etag_txn(txn, user_id, version)
            )
            return etag, _count_txn(txn, user_id, version)

        return await self.db.run_interaction("put_room_keys", txn_fn)

    async def get_keys(
        self,
        user_id: str,
        version: int,
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> list[RoomKey] | None:
        """Keys of a live version (all, one room's, or one session's); None
        when the version is not live."""

        def txn_fn(txn: Transaction) -> list[RoomKey] | None:
            live = txn.select_one(
                "SELECT 1 FROM e2e_room_keys_versions"
                " WHERE user_id = ? AND version = ? AND deleted = FALSE",
                (user_id, version),
            )
            if live is None:
                return None
            sql, args = _key_filter(user_id, version, room_id, session_id)
            rows = txn.select_all(f"SELECT {_KEY_COLUMNS} FROM e2e_room_keys WHERE " + sql, args)
            return [
                RoomKey(r[0], r[1], int(r[2]), int(r[3]), bool(r[4]), json.loads(r[5]))
                for r in rows
            ]

        return await self.db.run_interaction("get_room_keys", txn_fn)

    async def delete_keys(
        self,
        user_id: str,
        version: int,
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> tuple[int, int] | None:
        """Delete keys of a live version; (etag, count) afterwards, or None
        when the version is not live."""

        def txn_fn(txn: Transaction) -> tuple[int, int] | None:
            if not _lock_live_version_txn(txn, user_id, version):
                return None
            sql, args = _key_filter(user_id, version, room_id, session_id)
            txn.execute("DELETE FROM e2e_room_keys WHERE " + sql, args)
            etag = (
                _bump_etag_txn(txn, user_id, version)
                if txn.rowcount > 0
                else _etag_txn(txn, user_id, version)
            )
            return etag, _count_txn(txn, user_id, version)

        return await self.db.run_interaction("delete_room_keys", txn_fn)


def _key_filter(
    user_id: str, version: int, room_id: str | None, session_id: str | None
) -> tuple[str, tuple[Any, ...]]:
    sql = "user_id = ? AND version = ?"
    args: tuple[Any, ...] = (user_id, version)
    if room_id is not None:
        sql += " AND room_id = ?"
        args += (room_id,)
        if session_id is not None:
            sql += " AND session_id = ?"
            args += (session_id,)
    return sql, args
