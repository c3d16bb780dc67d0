"""FilterStore: the filters users upload (``user_filters``).

A filter never changes once stored, so look-ups are cached without
invalidation. IDs are small per-user integers; uploading a filter identical
(as canonical JSON) to one the user already has returns the existing ID, so
clients that upload the same filter at every start do not fill the table.
"""

from __future__ import annotations

import json
from typing import Any

from canonicaljson import encode_canonical_json

from atrium.storage.database import DatabasePool, Transaction
from atrium.util.caches import cached

# Attempts at allocating an ID when another upload of the same user races us.
_MAX_ATTEMPTS = 5


class FilterStore:
    def __init__(self, db: DatabasePool) -> None:
        self.db = db

    async def add_user_filter(self, user_id: str, filter_json: dict[str, Any]) -> int:
        """Store a filter for a user; returns its ID."""
        text = encode_canonical_json(filter_json).decode("utf-8")

        def txn_fn(txn: Transaction) -> int:
            if txn.engine.name == "postgres":
                # Serialise one user's uploads: IDs are MAX + 1 per user, and
                # under READ COMMITTED concurrent uploads would keep colliding.
                # (SQLite has a single writer already.)
                txn.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (user_id,))
            row = txn.select_one(
                "SELECT filter_id FROM user_filters WHERE user_id = ? AND filter_json = ?",
                (user_id, text),
            )
            if row is not None:
                return int(row[0])
            for _ in range(_MAX_ATTEMPTS):
                row = txn.select_one(
                    "SELECT COALESCE(MAX(filter_id), -1) + 1 FROM user_filters WHERE user_id = ?",
                    (user_id,),
                )
                assert row is not None
                filter_id = int(row[0])
                # ON CONFLICT: a concurrent upload (PostgreSQL) may have taken
                # this ID; try the next one rather than abort the transaction.
                txn.execute(
                    "INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES (?, ?, ?)"
                    " ON CONFLICT (user_id, filter_id) DO NOTHING",
                    (user_id, filter_id, text),
                )
                if txn.rowcount == 1:
                    return filter_id
            raise RuntimeError(f"could not allocate a filter ID for {user_id}")

        return await self.db.run_interaction("add_user_filter", txn_fn)

    @cached(max_entries=10_000)
    async def get_user_filter(self, user_id: str, filter_id: int) -> dict[str, Any] | None:
        """The filter JSON, or None if the user has no such filter."""
        rows = await self.db.execute(
            "get_user_filter",
            "SELECT filter_json FROM user_filters WHERE user_id = ? AND filter_id = ?",
            user_id,
            filter_id,
        )
        return json.loads(rows[0][0]) if rows else None
