"""PresenceStore: the latest presence of each local user and the presence
stream's id generator.

Cached: ``get_presence_for_user(user)``, invalidated after each change of
that user's presence (here, and on other processes by presence rows).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import attrs

from atrium.storage.database import DatabasePool, Transaction
from atrium.storage.id_generators import StreamIdGenerator
from atrium.util.caches.descriptors import cached


@attrs.frozen
class UserPresence:
    user_id: str
    # "online", "unavailable" or "offline" (spec: m.presence).
    state: str
    status_msg: str | None
    last_active_ts: int
    stream_id: int


_COLUMNS = "user_id, state, status_msg, last_active_ts, stream_id"


def _presence(row: tuple[Any, ...]) -> UserPresence:
    return UserPresence(row[0], row[1], row[2], int(row[3]), int(row[4]))


class PresenceStore:
    def __init__(self, db: DatabasePool, id_gen: StreamIdGenerator) -> None:
        self.db = db
        self.id_gen = id_gen

    @classmethod
    async def create(cls, db: DatabasePool) -> PresenceStore:
        return cls(db, await StreamIdGenerator.from_tables(db, [("presence", "stream_id")]))

    def get_current_token(self) -> int:
        return self.id_gen.get_current_token()

    @cached(max_entries=50_000)
    async def get_presence_for_user(self, user_id: str) -> UserPresence | None:
        rows = await self.db.execute(
            "get_presence_for_user",
            f"SELECT {_COLUMNS} FROM presence WHERE user_id = ?",
            user_id,
        )
        return _presence(rows[0]) if rows else None

    async def set_presence(
        self, user_id: str, state: str, status_msg: str | None, last_active_ts: int
    ) -> UserPresence:
        def txn_fn(txn: Transaction, stream_id: int) -> None:
            txn.upsert(
                "presence",
                {"user_id": user_id},
                {
                    "state": state,
                    "status_msg": status_msg,
                    "last_active_ts": last_active_ts,
                    "stream_id": stream_id,
                },
            )
            txn.call_after(self.get_presence_for_user.invalidate, (user_id,))

        with self.id_gen.get_next() as stream_id:
            await self.db.run_interaction("set_presence", txn_fn, stream_id)
        return UserPresence(user_id, state, status_msg, last_active_ts, stream_id)

    async def get_presence_for_users(
        self, user_ids: Collection[str], from_id: int, to_id: int
    ) -> list[UserPresence]:
        """Presence of ``user_ids`` changed in (from_id, to_id]."""
        if not user_ids:
            return []

        def txn_fn(txn: Transaction) -> list[tuple[Any, ...]]:
            return txn.select_many(
                f"SELECT {_COLUMNS} FROM presence WHERE {{in}} AND stream_id > ? AND stream_id <= ?",
                "user_id",
                user_ids,
                (from_id, to_id),
            )

        rows = await self.db.run_interaction("get_presence_for_users", txn_fn)
        return sorted((_presence(r) for r in rows), key=lambda p: p.stream_id)

    async def get_all_presence_updates(
        self, from_id: int, to_id: int, limit: int
    ) -> list[UserPresence]:
        """Every change in (from_id, to_id], oldest first (replication catch-up)."""
        rows = await self.db.execute(
            "get_all_presence_updates",
            f"SELECT {_COLUMNS} FROM presence WHERE stream_id > ? AND stream_id <= ?"
            " ORDER BY stream_id LIMIT ?",
            from_id,
            to_id,
            limit,
        )
        return [_presence(r) for r in rows]
