"""RoomStore: the ``rooms`` table — which rooms exist, their version, publicity.

A room's version never changes once the room exists, so ``get_room_version``
is cached without invalidation on change (only on deletion, which we do not
do). Events are loaded with the RoomVersion of their room, so a room's row
must exist before events of it are read back; persisting a room's
m.room.create event writes it (see ``PersistEventStore``).
"""

from __future__ import annotations

from collections.abc import Collection

import attrs

from atrium.events.room_versions import RoomVersion, get_room_version
from atrium.storage.database import DatabasePool, Transaction
from atrium.storage.stores.errors import NotFoundError, UnsupportedRoomVersionError
from atrium.storage.stores.invalidation import CacheInvalidator
from atrium.util.caches import cached

# Caches keyed by room ID that a new rooms row makes stale.
ROOM_CACHES = ("get_room_version_id", "is_room_public")


@attrs.frozen(slots=True)
class RoomInfo:
    room_id: str
    room_version_id: str
    creator: str | None
    is_public: bool


def store_room_txn(
    txn: Transaction,
    invalidator: CacheInvalidator,
    room_id: str,
    room_version_id: str,
    creator: str | None,
    is_public: bool,
) -> None:
    """Insert a room row unless one exists (a room's version is fixed at creation).

    The look-ups of the room may have cached "unknown room" answers.
    """
    txn.execute(
        "INSERT INTO rooms (room_id, room_version, creator, is_public) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (room_id) DO NOTHING",
        (room_id, room_version_id, creator, is_public),
    )
    for cache_name in ROOM_CACHES:
        txn.call_after(invalidator.invalidate, cache_name, [(room_id,)])


class RoomStore:
    """Reads and writes of the ``rooms`` table."""

    def __init__(self, db: DatabasePool, invalidator: CacheInvalidator) -> None:
        self.db = db
        self.invalidator = invalidator

    async def store_room(
        self, room_id: str, room_version: RoomVersion, creator: str | None, is_public: bool = False
    ) -> None:
        """Record a room; a no-op if it is already known."""
        await self.db.run_interaction(
            "store_room",
            store_room_txn,
            self.invalidator,
            room_id,
            room_version.identifier,
            creator,
            is_public,
        )

    async def get_room(self, room_id: str) -> RoomInfo | None:
        row = await self.db.run_interaction(
            "get_room",
            lambda txn: txn.select_one(
                "SELECT room_id, room_version, creator, is_public FROM rooms WHERE room_id = ?",
                (room_id,),
            ),
        )
        if row is None:
            return None
        return RoomInfo(row[0], row[1], row[2], bool(row[3]))

    @cached(max_entries=10_000)
    async def get_room_version_id(self, room_id: str) -> str | None:
        """The room's version identifier, or None for a room we do not know."""
        row = await self.db.run_interaction(
            "get_room_version_id",
            lambda txn: txn.select_one(
                "SELECT room_version FROM rooms WHERE room_id = ?", (room_id,)
            ),
        )
        return row[0] if row else None

    async def get_room_version(self, room_id: str) -> RoomVersion:
        """The RoomVersion of a known room.

        Raises NotFoundError for an unknown room and UnsupportedRoomVersionError
        when the stored identifier is not one this server implements.
        """
        identifier = await self.get_room_version_id(room_id)
        if identifier is None:
            raise NotFoundError(f"unknown room {room_id}")
        version = get_room_version(identifier)
        if version is None:
            raise UnsupportedRoomVersionError(identifier)
        return version

    async def get_room_version_ids(self, room_ids: Collection[str]) -> dict[str, str]:
        """Version identifiers of several rooms in one query (unknown rooms left out)."""
        rows = await self.db.run_interaction(
            "get_room_version_ids",
            lambda txn: txn.select_many(
                "SELECT room_id, room_version FROM rooms WHERE {in}", "room_id", room_ids
            ),
        )
        return {r[0]: r[1] for r in rows}

    @cached(max_entries=10_000)
    async def is_room_public(self, room_id: str) -> bool:
        """Whether the room is in the public room directory."""
        row = await self.db.run_interaction(
            "is_room_public",
            lambda txn: txn.select_one("SELECT is_public FROM rooms WHERE room_id = ?", (room_id,)),
        )
        return bool(row[0]) if row else False

    async def set_room_is_public(self, room_id: str, is_public: bool) -> None:
        def txn_fn(txn: Transaction) -> None:
            txn.execute("UPDATE rooms SET is_public = ? WHERE room_id = ?", (is_public, room_id))
            txn.call_after(self.invalidator.invalidate, "is_room_public", [(room_id,)])

        await self.db.run_interaction("set_room_is_public", txn_fn)

    async def get_public_room_ids(self) -> list[str]:
        rows = await self.db.execute(
            "get_public_room_ids",
            "SELECT room_id FROM rooms WHERE is_public = TRUE ORDER BY room_id",
        )
        return [r[0] for r in rows]


async def list_rooms_with_counts(
    db: DatabasePool, offset: int, limit: int
) -> tuple[list[tuple[str, str, str | None, bool, int]], int]:
    """(room_id, version, creator, is_public, joined members) of rooms, by room ID; and the total."""

    def txn_fn(txn: Transaction) -> tuple[list[tuple[str, str, str | None, bool, int]], int]:
        total = txn.select_one("SELECT COUNT(*) FROM rooms")
        rows = txn.select_all(
            "SELECT r.room_id, r.room_version, r.creator, r.is_public,"
            " (SELECT COUNT(*) FROM current_state_events AS c"
            "  WHERE c.room_id = r.room_id AND c.type = 'm.room.member' AND c.membership = 'join')"
            " FROM rooms AS r ORDER BY r.room_id LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [(r[0], r[1], r[2], bool(r[3]), int(r[4])) for r in rows], int(
            total[0]
        ) if total else 0

    return await db.run_interaction("admin_list_rooms", txn_fn)
