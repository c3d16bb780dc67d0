"""RoomMemberStore: current state and memberships — who is in which room.

Every membership question looks only at rows of type ``m.room.member``: a
custom state event whose state_key happens to be a user ID must never make
that user look joined (``current_state_events.membership`` is NULL for
non-member rows, and every query also filters on the type).

Cached reads and the writes that invalidate them (PersistEventStore, after
commit, through the CacheInvalidator):
- get_current_state_ids(room), get_users_in_room(room),
  get_membership_counts(room): on any current-state change of the room;
- get_rooms_for_user_with_stream_ordering(user): on any change of that
  user's membership in current state (the invariant /sync relies on);
- get_local_current_membership_for_user_in_room(user, room): on a change of
  the local user's membership, including out-of-band ones.
"""

from __future__ import annotations

from collections.abc import Collection
from types import MappingProxyType
from typing import Any

import attrs

from atrium.storage.database import DatabasePool, Transaction
from atrium.storage.stores.state import StateMap, StateTypes, filter_state
from atrium.util.caches import cached
from atrium.util.caches.deferred_cache import MISSING

MEMBER = "m.room.member"


@attrs.frozen(slots=True)
class RoomsForUser:
    """A local user's latest membership of one room."""

    room_id: str
    sender: str
    membership: str
    event_id: str
    stream_ordering: int
    room_version_id: str


@attrs.frozen(slots=True)
class LocalMembership:
    membership: str
    event_id: str


class RoomMemberStore:
    """Reads of current state, room_memberships and local_current_membership."""

    def __init__(self, db: DatabasePool) -> None:
        self.db = db

    # -- current state ------------------------------------------------------------
    @cached(max_entries=10_000)
    async def get_current_state_ids(self, room_id: str) -> StateMap:
        """The room's current state: (type, state_key) -> event_id."""
        rows = await self.db.execute(
            "get_current_state_ids",
            "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = ?",
            room_id,
        )
        return MappingProxyType({(r[0], r[1]): r[2] for r in rows})

    async def get_filtered_current_state_ids(
        self, room_id: str, types: StateTypes | None = None
    ) -> StateMap:
        """Part of the current state; from the cache when the room is cached."""
        cache = self.get_current_state_ids
        if types is None or cache.cache.get_if_cached((room_id,)) is not MISSING:
            return filter_state(await cache(room_id), types)
        clauses: list[str] = []
        args: list[str] = [room_id]
        for event_type, state_key in types:
            if state_key is None:
                clauses.append("type = ?")
                args.append(event_type)
            else:
                clauses.append("(type = ? AND state_key = ?)")
                args.extend((event_type, state_key))
        if not clauses:
            return {}
        rows = await self.db.execute(
            "get_filtered_current_state_ids",
            "SELECT type, state_key, event_id FROM current_state_events"
            f" WHERE room_id = ? AND ({' OR '.join(clauses)})",
            *args,
        )
        return {(r[0], r[1]): r[2] for r in rows}

    # -- joined members -----------------------------------------------------------
    @cached(max_entries=100_000)
    async def get_rooms_for_user_with_stream_ordering(
        self, user_id: str
    ) -> frozenset[tuple[str, int]]:
        """(room_id, stream_ordering of the join) for every room the user is joined to."""
        rows = await self.db.execute(
            "get_rooms_for_user_with_stream_ordering",
            "SELECT c.room_id, m.event_stream_ordering FROM room_memberships AS m"
            " JOIN current_state_events AS c ON c.event_id = m.event_id"
            " WHERE m.user_id = ? AND c.type = 'm.room.member' AND c.membership = 'join'",
            user_id,
        )
        return frozenset((r[0], r[1]) for r in rows)

    async def get_rooms_for_user(self, user_id: str) -> frozenset[str]:
        """The rooms the user is joined to."""
        rooms = await self.get_rooms_for_user_with_stream_ordering(user_id)
        return frozenset(room_id for room_id, _ in rooms)

    @cached(max_entries=10_000)
    async def get_users_in_room(self, room_id: str) -> frozenset[str]:
        """The users joined to the room according to its current state."""
        rows = await self.db.execute(
            "get_users_in_room",
            "SELECT state_key FROM current_state_events"
            " WHERE room_id = ? AND type = 'm.room.member' AND membership = 'join'",
            room_id,
        )
        return frozenset(r[0] for r in rows)

    async def is_host_joined(self, room_id: str, server_name: str) -> bool:
        suffix = ":" + server_name
        return any(u.endswith(suffix) for u in await self.get_users_in_room(room_id))

    # -- summaries ---------------------------------------------------------------
    @cached(max_entries=10_000)
    async def get_membership_counts(self, room_id: str) -> dict[str, int]:
        """membership -> number of users with it in current state (a shared dict: do not modify)."""
        rows = await self.db.execute(
            "get_membership_counts",
            "SELECT membership, COUNT(*) FROM current_state_events"
            " WHERE room_id = ? AND type = 'm.room.member' GROUP BY membership",
            room_id,
        )
        return {r[0]: int(r[1]) for r in rows}

    async def get_room_heroes(self, room_id: str, user_id: str, limit: int = 5) -> list[str]:
        """The m.heroes of a room summary (client-server /sync, "RoomSummary").

        The first ``limit`` joined or invited members by stream ordering,
        never ``user_id`` itself; when there are none, left and banned users.
        """

        def txn_fn(txn: Transaction) -> list[tuple[str, int]]:
            return txn.select_all(
                "SELECT c.state_key,"
                " CASE WHEN c.membership IN ('join', 'invite') THEN 0 ELSE 1 END AS kind"
                " FROM current_state_events AS c"
                " JOIN room_memberships AS m ON m.event_id = c.event_id"
                " WHERE c.room_id = ? AND c.type = 'm.room.member' AND c.state_key <> ?"
                " AND c.membership IN ('join', 'invite', 'leave', 'ban')"
                " ORDER BY kind, m.event_stream_ordering LIMIT ?",
                (room_id, user_id, limit),
            )

        rows = await self.db.run_interaction("get_room_heroes", txn_fn)
        if not rows:
            return []
        best_kind = rows[0][1]
        return [r[0] for r in rows if r[1] == best_kind]

    # -- local users ---------------------------------------------------------------
    @cached(max_entries=100_000)
    async def get_local_current_membership_for_user_in_room(
        self, user_id: str, room_id: str
    ) -> LocalMembership | None:
        """A local user's latest membership of a room (kept after we leave it)."""
        rows = await self.db.execute(
            "get_local_current_membership_for_user_in_room",
            "SELECT membership, event_id FROM local_current_membership"
            " WHERE user_id = ? AND room_id = ?",
            user_id,
            room_id,
        )
        return LocalMembership(rows[0][0], rows[0][1]) if rows else None

    async def get_rooms_for_local_user_where_membership_is(
        self, user_id: str, memberships: Collection[str]
    ) -> list[RoomsForUser]:
        """A local user's rooms whose latest membership is one of ``memberships``.

        Served from local_current_membership, so a leave stays visible after
        this server left the room and its current state was cleaned up.
        """
        if not memberships:
            return []

        def txn_fn(txn: Transaction) -> list[tuple[Any, ...]]:
            return txn.select_many(
                "SELECT l.room_id, m.sender, l.membership, l.event_id,"
                " l.event_stream_ordering, r.room_version"
                " FROM local_current_membership AS l"
                " JOIN room_memberships AS m ON m.event_id = l.event_id"
                " JOIN rooms AS r ON r.room_id = l.room_id"
                " WHERE {in} AND l.user_id = ? ORDER BY l.event_stream_ordering",
                "l.membership",
                set(memberships),
                (user_id,),
            )

        rows = await self.db.run_interaction("get_rooms_for_local_user_where_membership_is", txn_fn)
        return [RoomsForUser(*row) for row in rows]
