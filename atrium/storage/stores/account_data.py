"""AccountDataStore: a user's account data, global and per room, and the
account_data stream's id generator.

Global account data is stored with ``room_id = ''``. Readers get ``None`` for
the room of global data. Every write allocates the next stream id (so the
position the account_data stream reports never passes an unfinished write)
and replaces the row for (user, room, type).

Cached: ``get_account_data_for_user(user)``, invalidated by any write of that
user's account data (here, after commit, and on other processes by the
account_data stream's rows).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from atrium.storage.database import DatabasePool, Transaction
from atrium.storage.id_generators import StreamIdGenerator
from atrium.util.caches.descriptors import cached

GLOBAL = ""


def _dump(content: Mapping[str, Any]) -> str:
    return json.dumps(content, separators=(",", ":"), ensure_ascii=False)


@attrs.frozen
class UserAccountData:
    """All of one user's account data (shared by the cache: do not modify)."""

    # type -> content
    global_data: Mapping[str, Mapping[str, Any]]
    # room_id -> type -> content
    rooms: Mapping[str, Mapping[str, Mapping[str, Any]]]


@attrs.frozen
class AccountDataChange:
    """One row of the account_data stream as stored."""

    stream_id: int
    user_id: str
    room_id: str | None
    account_data_type: str


class AccountDataStore:
    def __init__(self, db: DatabasePool, id_gen: StreamIdGenerator) -> None:
        self.db = db
        self.id_gen = id_gen

    @classmethod
    async def create(cls, db: DatabasePool) -> AccountDataStore:
        return cls(db, await StreamIdGenerator.from_tables(db, [("account_data", "stream_id")]))

    def get_current_token(self) -> int:
        return self.id_gen.get_current_token()

    # -- reads ---------------------------------------------------------------------
    @cached(max_entries=50_000)
    async def get_account_data_for_user(self, user_id: str) -> UserAccountData:
        rows = await self.db.execute(
            "get_account_data_for_user",
            "SELECT room_id, account_data_type, content FROM account_data WHERE user_id = ?",
            user_id,
        )
        global_data: dict[str, Mapping[str, Any]] = {}
        rooms: dict[str, dict[str, Mapping[str, Any]]] = {}
        for room_id, data_type, content in rows:
            value = MappingProxyType(json.loads(content))
            if room_id == GLOBAL:
                global_data[data_type] = value
            else:
                rooms.setdefault(room_id, {})[data_type] = value
        return UserAccountData(
            MappingProxyType(global_data),
            MappingProxyType({r: MappingProxyType(d) for r, d in rooms.items()}),
        )

    async def get_account_data_by_type(
        self, user_id: str, room_id: str | None, data_type: str
    ) -> Mapping[str, Any] | None:
        """One account data entry (global when room_id is None), or None if unset."""
        data = await self.get_account_data_for_user(user_id)
        if room_id is None:
            return data.global_data.get(data_type)
        return data.rooms.get(room_id, {}).get(data_type)

    async def get_updated_account_data_for_user(
        self, user_id: str, from_id: int, to_id: int
    ) -> list[tuple[str | None, str, dict[str, Any]]]:
        """(room_id or None, type, content) of what changed in (from_id, to_id]."""
        rows = await self.db.execute(
            "get_updated_account_data_for_user",
            "SELECT room_id, account_data_type, content FROM account_data"
            " WHERE user_id = ? AND stream_id > ? AND stream_id <= ? ORDER BY stream_id",
            user_id,
            from_id,
            to_id,
        )
        return [(r[0] or None, r[1], json.loads(r[2])) for r in rows]

    async def get_all_updated_account_data(
        self, from_id: int, to_id: int, limit: int
    ) -> list[AccountDataChange]:
        """Every change in (from_id, to_id], oldest first (replication catch-up)."""
        rows = await self.db.execute(
            "get_all_updated_account_data",
            "SELECT stream_id, user_id, room_id, account_data_type FROM account_data"
            " WHERE stream_id > ? AND stream_id <= ? ORDER BY stream_id LIMIT ?",
            from_id,
            to_id,
            limit,
        )
        return [AccountDataChange(int(r[0]), r[1], r[2] or None, r[3]) for r in rows]

    # -- writes ----------------------------------------------------------------------
    async def add_account_data(
        self, user_id: str, room_id: str | None, data_type: str, content: Mapping[str, Any]
    ) -> int:
        """Set one entry; returns the position to publish (the generator's current token)."""
        raw = _dump(content)
        with self.id_gen.get_next() as stream_id:
            await self.db.run_interaction(
                "add_account_data",
                self.add_account_data_txn,
                stream_id,
                user_id,
                room_id,
                data_type,
                raw,
            )
        return self.id_gen.get_current_token()

    def add_account_data_txn(
        self,
        txn: Transaction,
        stream_id: int,
        user_id: str,
        room_id: str | None,
        data_type: str,
        raw_content: str,
    ) -> None:
        """The write itself, for stores that change account data in their own transaction."""
        txn.upsert(
            "account_data",
            {
                "user_id": user_id,
                "room_id": room_id or GLOBAL,
                "account_data_type": data_type,
            },
            {"stream_id": stream_id, "content": raw_content},
        )
        txn.call_after(self.get_account_data_for_user.invalidate, (user_id,))
