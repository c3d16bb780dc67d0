"""Room aliases and forgotten rooms."""

from __future__ import annotations

from atrium.storage.database import DatabasePool, Transaction
from atrium.util.caches.descriptors import cached


class DirectoryStore:
    def __init__(self, db: DatabasePool) -> None:
        self.db = db

    async def create_alias(self, room_alias: str, room_id: str, creator: str) -> bool:
        """Map an alias to a room; False if the alias is taken."""

        def txn_fn(txn: Transaction) -> bool:
            if txn.select_one("SELECT 1 FROM room_aliases WHERE room_alias = ?", (room_alias,)):
                return False
            txn.execute(
                "INSERT INTO room_aliases (room_alias, room_id, creator) VALUES (?, ?, ?)",
                (room_alias, room_id, creator),
            )
            txn.call_after(self.get_room_for_alias.invalidate, (room_alias,))
            txn.call_after(self.get_aliases_for_room.invalidate, (room_id,))
            return True

        return await self.db.run_interaction("create_alias", txn_fn)

    @cached(max_entries=10000)
    async def get_room_for_alias(self, room_alias: str) -> tuple[str, str] | None:
        """(room_id, creator) of an alias, or None."""
        rows = await self.db.execute(
            "get_room_for_alias",
            "SELECT room_id, creator FROM room_aliases WHERE room_alias = ?",
            room_alias,
        )
        return (rows[0][0], rows[0][1]) if rows else None

    @cached(max_entries=10000)
    async def get_aliases_for_room(self, room_id: str) -> tuple[str, ...]:
        rows = await self.db.execute(
            "get_aliases_for_room",
            "SELECT room_alias FROM room_aliases WHERE room_id = ? ORDER BY room_alias",
            room_id,
        )
        return tuple(r[0] for r in rows)

    async def delete_alias(self, room_alias: str) -> str | None:
        """Remove an alias; returns the room it pointed to."""

        def txn_fn(txn: Transaction) -> str | None:
            row = txn.select_one(
                "SELECT room_id FROM room_aliases WHERE room_alias = ?", (room_alias,)
            )
            if row is None:
                return None
            txn.execute("DELETE FROM room_aliases WHERE room_alias = ?", (room_alias,))
            txn.call_after(self.get_room_for_alias.invalidate, (room_alias,))
            txn.call_after(self.get_aliases_for_room.invalidate, (row[0],))
            return row[0]

        return await self.db.run_interaction("delete_alias", txn_fn)

    async def forget_room(self, user_id: str, room_id: str) -> None:
        def txn_fn(txn: Transaction) -> None:
            txn.upsert("room_forgotten", {"user_id": user_id, "room_id": room_id}, {})
            txn.call_after(self.get_forgotten_rooms.invalidate, (user_id,))

        await self.db.run_interaction("forget_room", txn_fn)

    async def unforget_room(self, user_id: str, room_id: str) -> None:
        def txn_fn(txn: Transaction) -> None:
            txn.execute(
                "DELETE FROM room_forgotten WHERE user_id = ? AND room_id = ?", (user_id, room_id)
            )
            txn.call_after(self.get_forgotten_rooms.invalidate, (user_id,))

        await self.db.run_interaction("unforget_room", txn_fn)

    @cached(max_entries=10000)
    async def get_forgotten_rooms(self, user_id: str) -> frozenset[str]:
        rows = await self.db.execute(
            "get_forgotten_rooms", "SELECT room_id FROM room_forgotten WHERE user_id = ?", user_id
        )
        return frozenset(r[0] for r in rows)
