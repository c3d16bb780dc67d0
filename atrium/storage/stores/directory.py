"""Room aliases, forgotten rooms, and what the public room directory shows.

The public room list (``get_public_rooms_state``) is read in ONE transaction
whatever the number of rooms: the published rooms with their joined member
counts, and the event IDs of the current-state events the directory shows;
the events themselves then come from the event cache in one batch.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import attrs

from atrium.storage.database import DatabasePool, Transaction
from atrium.util.caches.descriptors import cached


@attrs.frozen(slots=True)
class PublicRoomState:
    """A published room: joined members and (type -> event_id) of its empty-key state."""

    room_id: str
    num_joined_members: int
    state: dict[str, str]


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

    async def get_public_rooms_state(self, state_types: Collection[str]) -> list[PublicRoomState]:
        """Every published room with at least one joined member.

        ``state_types`` are the (empty state key) state types to look up;
        two statements in one transaction, however many rooms are published.
        """
        types = sorted(set(state_types))

        def txn_fn(txn: Transaction) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
            counts = txn.select_all(
                "SELECT r.room_id, COUNT(c.event_id) FROM rooms AS r"
                " JOIN current_state_events AS c ON c.room_id = r.room_id"
                " WHERE r.is_public = TRUE AND c.type = 'm.room.member' AND c.membership = 'join'"
                " GROUP BY r.room_id"
            )
            clause, args = txn.engine.in_clause("c.type", types)
            state = txn.select_all(
                "SELECT c.room_id, c.type, c.event_id FROM rooms AS r"
                " JOIN current_state_events AS c ON c.room_id = r.room_id"
                f" WHERE r.is_public = TRUE AND c.state_key = '' AND {clause}",
                args,
            )
            return counts, state

        counts, state_rows = await self.db.run_interaction("get_public_rooms_state", txn_fn)
        by_room: dict[str, dict[str, str]] = {}
        for room_id, event_type, event_id in state_rows:
            by_room.setdefault(room_id, {})[event_type] = event_id
        return [
            PublicRoomState(room_id, int(count), by_room.get(room_id, {}))
            for room_id, count in counts
            if count
        ]
