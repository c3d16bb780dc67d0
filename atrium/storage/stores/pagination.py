"""PaginationStore: reading a room's timeline in topological order.

A room's timeline (non-outlier, accepted, not soft-failed events) is ordered
by ``(topological_ordering, stream_ordering)``: depth first, then the order
this server received them. A ``RoomPosition`` names a point in that order;
it sits just *after* the event with exactly that key, so

- paginating backwards from P returns the events with key <= P, newest first;
- paginating forwards from P returns the events with key > P, oldest first.

The next position after a backwards page is the last event's key with its
stream ordering minus one (just before that event); after a forwards page it
is the last event's key. Keys are integers, so nothing can fall between.

Both engines compare row values ``(a, b) <= (?, ?)`` and walk the
``events_room_topological`` index (room_id, topological_ordering,
stream_ordering) for it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import attrs

from atrium.storage.database import DatabasePool, Transaction
from atrium.sync.token import RoomStreamToken

# The events a client may ever see in a timeline (history visibility is
# decided later, per user).
_TIMELINE = "outlier = FALSE AND rejection_reason IS NULL AND soft_failed = FALSE"


@attrs.frozen(slots=True, order=True)
class RoomPosition:
    """A point in a room's topological order (just after the event with this key)."""

    topological: int
    stream: int

    def just_before(self) -> RoomPosition:
        """The point just before the event with this key."""
        return RoomPosition(self.topological, self.stream - 1)


# Before every event of any room: depths are never negative (PDU validation).
BEFORE_ALL = RoomPosition(-1, 0)


@attrs.frozen(slots=True)
class TimelineRow:
    event_id: str
    position: RoomPosition


@attrs.frozen(slots=True)
class SqlEventFilter:
    """The parts of a RoomEventFilter the database can apply (exact values only).

    ``None`` means "no restriction"; an empty collection in ``types`` or
    ``senders`` matches nothing.
    """

    types: Collection[str] | None = None
    not_types: Collection[str] = ()
    senders: Collection[str] | None = None
    not_senders: Collection[str] = ()

    def matches_nothing(self) -> bool:
        return (self.types is not None and not self.types) or (
            self.senders is not None and not self.senders
        )


def _filter_sql(txn: Transaction, event_filter: SqlEventFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for column, values, negate in (
        ("type", event_filter.types, False),
        ("type", event_filter.not_types, True),
        ("sender", event_filter.senders, False),
        ("sender", event_filter.not_senders, True),
    ):
        if values is None or (negate and not values):
            continue
        clause, in_args = txn.engine.in_clause(column, sorted(set(values)))
        clauses.append(f"NOT ({clause})" if negate else clause)
        args.extend(in_args)
    return "".join(f" AND {c}" for c in clauses), args


def stream_token_clause(token: RoomStreamToken) -> tuple[str, list[Any]]:
    """SQL matching events at or before a (possibly vector) events stream token."""
    clause = "stream_ordering <= ?"
    args: list[Any] = [token.stream]
    for instance, position in token.instance_positions.items():
        if position > token.stream:
            clause += " OR (instance_name = ? AND stream_ordering <= ?)"
            args.extend((instance, position))
    return f"({clause})", args


class PaginationStore:
    """Timeline queries by topological position; nothing here is cached.

    Positions of events never change, and the queries are single index
    range scans, so caching them would buy little.
    """

    def __init__(self, db: DatabasePool) -> None:
        self.db = db

    async def paginate(
        self,
        room_id: str,
        *,
        after: RoomPosition | None,
        upto: RoomPosition | None,
        backwards: bool,
        limit: int,
        event_filter: SqlEventFilter | None = None,
    ) -> list[TimelineRow]:
        """Timeline events with ``after < key <= upto``, newest first when ``backwards``.

        A bound of None is open. At most ``limit`` rows.
        """
        if limit <= 0 or (after is not None and upto is not None and upto <= after):
            return []
        if event_filter is not None and event_filter.matches_nothing():
            return []

        def txn_fn(txn: Transaction) -> list[tuple[Any, ...]]:
            sql = (
                "SELECT event_id, topological_ordering, stream_ordering FROM events"
                f" WHERE room_id = ? AND {_TIMELINE}"
            )
            args: list[Any] = [room_id]
            if after is not None:
                sql += " AND (topological_ordering, stream_ordering) > (?, ?)"
                args.extend((after.topological, after.stream))
            if upto is not None:
                sql += " AND (topological_ordering, stream_ordering) <= (?, ?)"
                args.extend((upto.topological, upto.stream))
            if event_filter is not None:
                extra, extra_args = _filter_sql(txn, event_filter)
                sql += extra
                args.extend(extra_args)
            order = "DESC" if backwards else "ASC"
            sql += f" ORDER BY topological_ordering {order}, stream_ordering {order} LIMIT ?"
            args.append(limit)
            return txn.select_all(sql, args)

        rows = await self.db.run_interaction("paginate_room_events", txn_fn)
        return [TimelineRow(r[0], RoomPosition(int(r[1]), int(r[2]))) for r in rows]

    async def get_event_positions(
        self, event_ids: Collection[str]
    ) -> dict[str, tuple[str, RoomPosition]]:
        """event_id -> (room_id, position) for the given timeline events we have."""
        if not event_ids:
            return {}
        rows = await self.db.run_interaction(
            "get_event_positions",
            lambda txn: txn.select_many(
                "SELECT event_id, room_id, topological_ordering, stream_ordering FROM events"
                f" WHERE {{in}} AND {_TIMELINE}",
                "event_id",
                set(event_ids),
            ),
        )
        return {r[0]: (r[1], RoomPosition(int(r[2]), int(r[3]))) for r in rows}

    async def get_position_for_stream_token(
        self, room_id: str, token: RoomStreamToken
    ) -> RoomPosition:
        """The position of the room's last timeline event at or before a stream token.

        A /sync ``prev_batch`` or ``next_batch`` is an events stream position;
        pagination works in topological order, so it starts from the latest
        event the token covers. BEFORE_ALL when the token predates the room.
        """
        clause, args = stream_token_clause(token)

        def txn_fn(txn: Transaction) -> tuple[Any, ...] | None:
            return txn.select_one(
                "SELECT topological_ordering, stream_ordering FROM events"
                f" WHERE room_id = ? AND {_TIMELINE} AND {clause}"
                " ORDER BY stream_ordering DESC LIMIT 1",
                [room_id, *args],
            )

        row = await self.db.run_interaction("get_position_for_stream_token", txn_fn)
        return RoomPosition(int(row[0]), int(row[1])) if row else BEFORE_ALL

    async def get_last_timeline_event(
        self, room_id: str, upto: RoomPosition | None = None
    ) -> TimelineRow | None:
        """The room's last timeline event at or before ``upto`` (or at all)."""
        rows = await self.paginate(room_id, after=None, upto=upto, backwards=True, limit=1)
        return rows[0] if rows else None

    async def get_event_for_timestamp(
        self, room_id: str, ts: int, backwards: bool, limit: int = 20
    ) -> list[tuple[str, int]]:
        """Timeline events nearest ``ts``: at or before it when ``backwards``, else at or after.

        Up to ``limit`` candidates, nearest first, as (event_id, origin_server_ts).
        """
        op, order = ("<=", "DESC") if backwards else (">=", "ASC")

        def txn_fn(txn: Transaction) -> list[tuple[Any, ...]]:
            return txn.select_all(
                "SELECT event_id, origin_server_ts FROM events"
                f" WHERE room_id = ? AND {_TIMELINE} AND origin_server_ts {op} ?"
                f" ORDER BY origin_server_ts {order}, stream_ordering {order} LIMIT ?",
                (room_id, ts, limit),
            )

        rows = await self.db.run_interaction("get_event_for_timestamp", txn_fn)
        return [(r[0], int(r[1])) for r in rows]

    async def get_joined_members_with_profiles(
        self, room_id: str
    ) -> dict[str, tuple[str | None, str | None]]:
        """user_id -> (display_name, avatar_url) of the room's joined members.

        From room_memberships (the profile the join event carried), joined to
        current state so only members still joined count.
        """
        rows = await self.db.execute(
            "get_joined_members_with_profiles",
            "SELECT c.state_key, m.display_name, m.avatar_url FROM current_state_events AS c"
            " JOIN room_memberships AS m ON m.event_id = c.event_id"
            " WHERE c.room_id = ? AND c.type = 'm.room.member' AND c.membership = 'join'",
            room_id,
        )
        return {r[0]: (r[1], r[2]) for r in rows}
