"""EventPushActionsStore: reads of the push actions the events writer stores
with each event (``event_push_actions``, written by PersistEventStore).

Nothing here is cached: counts depend on the user's latest read receipt and
on new events, and both rows are committed before their stream rows are
published, so any process reading the database after applying those rows
(a sync worker included) sees matching counts. Each read is one statement
whatever the number of rooms.

"After the user's latest read receipt" (spec "Receiving notifications"):
the highest stream ordering among the user's m.read and m.read.private
receipts in the room, threaded ones included (Atrium keeps no per-thread
counts, so reading a thread counts as reading the room up to that event).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import attrs

from atrium.storage.database import DatabasePool, Transaction

# The stream ordering the user has read up to in the room of row ``a``.
_READ_UPTO = (
    "COALESCE((SELECT MAX(e.stream_ordering) FROM receipts AS r"
    " JOIN events AS e ON e.event_id = r.event_id"
    " WHERE r.room_id = a.room_id AND r.user_id = a.user_id"
    " AND r.receipt_type IN ('m.read', 'm.read.private')), 0)"
)


@attrs.frozen(slots=True)
class UnreadCounts:
    notifications: int
    highlights: int


@attrs.frozen(slots=True)
class StoredNotification:
    room_id: str
    event_id: str
    stream_ordering: int
    actions: list[Any]
    highlight: bool
    read: bool


@attrs.frozen(slots=True)
class PendingPush:
    """A notifying action for a pusher to send."""

    user_id: str
    room_id: str
    event_id: str
    stream_ordering: int
    actions: list[Any]


class EventPushActionsStore:
    def __init__(self, db: DatabasePool) -> None:
        self.db = db

    async def get_unread_counts(
        self, user_id: str, room_ids: Collection[str]
    ) -> dict[str, UnreadCounts]:
        """room -> counts after the user's latest receipt (rooms with none left out)."""
        if not room_ids:
            return {}

        def txn_fn(txn: Transaction) -> list[tuple[Any, ...]]:
            return txn.select_many(
                "SELECT a.room_id, SUM(CASE WHEN a.notif THEN 1 ELSE 0 END),"
                " SUM(CASE WHEN a.highlight THEN 1 ELSE 0 END)"
                " FROM event_push_actions AS a"
                f" WHERE {{in}} AND a.user_id = ? AND a.stream_ordering > {_READ_UPTO}"
                " GROUP BY a.room_id",
                "a.room_id",
                set(room_ids),
                (user_id,),
            )

        rows = await self.db.run_interaction("get_unread_counts", txn_fn)
        return {r[0]: UnreadCounts(int(r[1] or 0), int(r[2] or 0)) for r in rows}

    async def get_total_unread_count(self, user_id: str, upto: int) -> int:
        """Unread notifying events up to stream ordering ``upto`` over all the
        user's rooms (push gateway ``counts.unread`` as of the pushed event)."""
        rows = await self.db.execute(
            "get_total_unread_count",
            "SELECT COUNT(*) FROM event_push_actions AS a"
            " WHERE a.user_id = ? AND a.notif = TRUE AND a.stream_ordering <= ?"
            f" AND a.stream_ordering > {_READ_UPTO}",
            user_id,
            upto,
        )
        return int(rows[0][0]) if rows else 0

    async def get_notifications(
        self, user_id: str, before: int | None, limit: int, only_highlight: bool
    ) -> list[StoredNotification]:
        """The user's notifications, newest first, below ``before`` (GET /notifications)."""
        clauses = ["a.user_id = ?", "a.notif = TRUE"]
        args: list[Any] = [user_id]
        if only_highlight:
            clauses.append("a.highlight = TRUE")
        if before is not None:
            clauses.append("a.stream_ordering < ?")
            args.append(before)
        rows = await self.db.execute(
            "get_notifications",
            "SELECT a.room_id, a.event_id, a.stream_ordering, a.actions, a.highlight,"
            f" CASE WHEN a.stream_ordering <= {_READ_UPTO} THEN 1 ELSE 0 END"
            f" FROM event_push_actions AS a WHERE {' AND '.join(clauses)}"
            " ORDER BY a.stream_ordering DESC LIMIT ?",
            *args,
            limit,
        )
        return [
            StoredNotification(r[0], r[1], int(r[2]), json.loads(r[3]), bool(r[4]), bool(r[5]))
            for r in rows
        ]

    async def get_pending_pushes(
        self, user_ids: Collection[str], after: int, upto: int, limit: int
    ) -> list[PendingPush]:
        """Notifying actions of these users in (after, upto], oldest first."""
        if not user_ids:
            return []

        def txn_fn(txn: Transaction) -> list[tuple[Any, ...]]:
            return txn.select_many(
                "SELECT user_id, room_id, event_id, stream_ordering, actions"
                " FROM event_push_actions WHERE {in} AND notif = TRUE"
                " AND stream_ordering > ? AND stream_ordering <= ?"
                " ORDER BY stream_ordering LIMIT ?",
                "user_id",
                set(user_ids),
                (after, upto, limit),
            )

        rows = await self.db.run_interaction("get_pending_pushes", txn_fn)
        rows.sort(key=lambda r: r[3])
        return [PendingPush(r[0], r[1], r[2], int(r[3]), json.loads(r[4])) for r in rows[:limit]]
