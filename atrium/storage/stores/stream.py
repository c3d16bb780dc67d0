"""StreamStore: reading rooms by events-stream position, for /sync.

Positions are ``stream_ordering`` values: a range ``(lower, upper]`` holds
the events with ``lower < stream_ordering <= upper``. Only timeline events
count: outliers, soft-failed and rejected events are never returned.

Everything here is batched over rooms, because an initial /sync asks the
same question for every room of a user (hundreds of them):
- ``get_room_event_rows``: the newest events of many rooms, each in its own
  range, newest first, ``limit`` per room. One statement per 100 rooms: a
  UNION ALL of per-room ``ORDER BY ... LIMIT`` sub-selects, each an index
  range scan on ``events (room_id, stream_ordering)``, so a room's size does
  not matter. ``get_rooms_rows_in_range`` is the cached form for ranges with
  a lower bound (incremental syncs).
- ``get_local_membership_changes`` / ``get_membership_history``: a local
  user's membership changes, from ``local_current_membership`` (kept after
  the server leaves a room) and ``room_memberships``.
- ``get_state_for_groups``: the full state of many state groups in ONE
  statement (the recursive chain walk of ``StateGroupStore``, partitioned by
  the starting group). Groups never change, so results go into the state
  store's group cache through ``prefill_group``.
- ``get_room_summaries``: joined/invited counts and hero candidates of many
  rooms (client-server "RoomSummary"), computed from current state joined
  with ``room_memberships``; cached per room and invalidated together with
  ``get_membership_counts`` (the composition root registers it under that name).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, NamedTuple

import attrs

from atrium.storage.database import DatabasePool, Transaction
from atrium.storage.stores.roommember import RoomsForUser
from atrium.storage.stores.state import StateGroupStore, StateMap, freeze_state
from atrium.util.caches import cached, cached_list
from atrium.util.caches.deferred_cache import MISSING

# Lower than any stream ordering (backfilled events are negative).
MIN_POSITION = -(2**62)
# Rooms per UNION ALL statement: well under SQLite's compound-select and
# variable limits.
_ROOMS_PER_STATEMENT = 100
# Candidates kept per room for m.heroes: 5 heroes plus the syncing user.
_HERO_CANDIDATES = 6

_ROW_COLUMNS = (
    "event_id, room_id, stream_ordering, topological_ordering, type, state_key, sender,"
    " instance_name"
)
_TIMELINE_ONLY = "outlier = FALSE AND soft_failed = FALSE AND rejection_reason IS NULL"

_GROUPS_STATE_SQL = """
WITH RECURSIVE chain(start_group, state_group, distance) AS (
    SELECT id, id, 0 FROM state_groups WHERE {in}
    UNION ALL
    SELECT c.start_group, e.prev_state_group, c.distance + 1
    FROM state_group_edges AS e JOIN chain AS c ON e.state_group = c.state_group
)
SELECT start_group, type, state_key, event_id FROM (
    SELECT c.start_group, s.type, s.state_key, s.event_id,
           ROW_NUMBER() OVER (
               PARTITION BY c.start_group, s.type, s.state_key ORDER BY c.distance
           ) AS nearest
    FROM chain AS c JOIN state_groups_state AS s ON s.state_group = c.state_group
) AS ranked
WHERE nearest = 1
"""


class EventRow(NamedTuple):
    """What /sync needs to know of an event before loading it (a tuple: cheap to build)."""

    event_id: str
    room_id: str
    stream_ordering: int
    topological_ordering: int
    type: str
    state_key: str | None
    sender: str
    instance_name: str


@attrs.frozen(slots=True)
class RoomSummaryData:
    """Member counts and the first members by stream ordering (for m.heroes)."""

    joined: int
    invited: int
    # (user_id, kind): kind 0 = joined or invited, 1 = left or banned;
    # ordered by kind, then by the stream ordering of the member event.
    hero_candidates: tuple[tuple[str, int], ...]

    def heroes(self, user_id: str, limit: int = 5) -> list[str]:
        """m.heroes for ``user_id``: joined/invited members, else left/banned ones."""
        others = [(u, k) for u, k in self.hero_candidates if u != user_id]
        if not others:
            return []
        best = others[0][1]
        return [u for u, k in others if k == best][:limit]


def _event_row(r: tuple[Any, ...]) -> EventRow:
    # Both drivers return Python ints for BIGINT columns.
    return EventRow._make(r)


class StreamStore:
    """Timeline and membership reads by stream position, batched over rooms."""

    def __init__(self, db: DatabasePool, state: StateGroupStore) -> None:
        self.db = db
        self.state = state

    # -- timelines -------------------------------------------------------------------
    async def get_room_event_rows(
        self, ranges: Mapping[str, tuple[int | None, int]], limit: int
    ) -> dict[str, list[EventRow]]:
        """room -> its newest ``limit`` timeline events in (lower, upper], newest first.

        ``ranges`` maps each room to (lower exclusive or None, upper inclusive).
        """
        if not ranges or limit <= 0:
            return {room_id: [] for room_id in ranges}
        items = list(ranges.items())

        def txn_fn(txn: Transaction) -> list[tuple[Any, ...]]:
            if txn.engine.name == "postgres":
                # One statement whatever the number of rooms: a LATERAL index
                # scan per room. (PostgreSQL plans a 100-way UNION ALL slowly;
                # SQLite has no LATERAL but plans the UNION cheaply.)
                return txn.select_all(
                    f"SELECT r.* FROM unnest(?::text[], ?::bigint[], ?::bigint[]) AS q(room_id, lo, hi)"
                    f" CROSS JOIN LATERAL (SELECT {_ROW_COLUMNS} FROM events"
                    " WHERE events.room_id = q.room_id AND stream_ordering > q.lo AND stream_ordering <= q.hi"
                    f" AND {_TIMELINE_ONLY} ORDER BY stream_ordering DESC LIMIT ?) AS r",
                    (
                        [room_id for room_id, _ in items],
                        [MIN_POSITION if lo is None else lo for _, (lo, _hi) in items],
                        [hi for _, (_lo, hi) in items],
                        limit,
                    ),
                )
            rows: list[tuple[Any, ...]] = []
            for start in range(0, len(items), _ROOMS_PER_STATEMENT):
                chunk = items[start : start + _ROOMS_PER_STATEMENT]
                selects = []
                args: list[Any] = []
                for i, (room_id, (lower, upper)) in enumerate(chunk):
                    selects.append(
                        f"SELECT * FROM (SELECT {_ROW_COLUMNS} FROM events"
                        " WHERE room_id = ? AND stream_ordering > ? AND stream_ordering <= ?"
                        f" AND {_TIMELINE_ONLY}"
                        f" ORDER BY stream_ordering DESC LIMIT ?) AS r{i}"
                    )
                    args.extend((room_id, MIN_POSITION if lower is None else lower, upper, limit))
                rows.extend(txn.select_all(" UNION ALL ".join(selects), args))
            return rows

        rows = await self.db.run_interaction("get_room_event_rows", txn_fn)
        result: dict[str, list[EventRow]] = {room_id: [] for room_id in ranges}
        for r in rows:
            result[r[1]].append(_event_row(r))
        for room_rows in result.values():
            room_rows.sort(key=lambda row: row.stream_ordering, reverse=True)
        return result

    # A closed range (lower, upper] below the events token never gains rows
    # (stream orderings are allocated increasing; backfill goes below 0), so
    # its rows are cached without invalidation. That makes the N long-polls
    # woken by one message in a busy room read its rows once between them.
    @cached(max_entries=20_000, num_args=4)
    async def get_room_rows_in_range(
        self, room_id: str, lower: int, upper: int, limit: int
    ) -> tuple[EventRow, ...]:
        """``get_room_event_rows`` for one room and a range with a lower bound, cached."""
        rows = await self.get_room_event_rows({room_id: (lower, upper)}, limit)
        return tuple(rows[room_id])

    @cached_list("get_room_rows_in_range", "room_ids")
    async def get_rooms_rows_in_range(
        self, room_ids: Collection[str], lower: int, upper: int, limit: int
    ) -> dict[str, tuple[EventRow, ...]]:
        """The batched form: one range for many rooms, cached per room."""
        rows = await self.get_room_event_rows({r: (lower, upper) for r in room_ids}, limit)
        return {room_id: tuple(room_rows) for room_id, room_rows in rows.items()}

    async def get_rooms_changed_between(
        self, room_ids: Collection[str], lower: int, upper: int
    ) -> set[str]:
        """Which of ``room_ids`` have timeline events in (lower, upper]."""
        if not room_ids:
            return set()
        rows = await self.db.run_interaction(
            "get_rooms_changed_between",
            lambda txn: txn.select_many(
                "SELECT DISTINCT room_id FROM events WHERE {in}"
                f" AND stream_ordering > ? AND stream_ordering <= ? AND {_TIMELINE_ONLY}",
                "room_id",
                set(room_ids),
                (lower, upper),
            ),
        )
        return {r[0] for r in rows}

    # -- memberships ------------------------------------------------------------------
    async def get_local_membership_changes(
        self, user_id: str, lower: int | None, upper: int
    ) -> list[RoomsForUser]:
        """A local user's latest membership of each room, where it changed in (lower, upper].

        From local_current_membership, so rooms this server has left are
        included; each room once (its latest membership), oldest first.
        """

        def txn_fn(txn: Transaction) -> list[tuple[Any, ...]]:
            return txn.select_all(
                "SELECT l.room_id, m.sender, l.membership, l.event_id,"
                " l.event_stream_ordering, r.room_version"
                " FROM local_current_membership AS l"
                " JOIN room_memberships AS m ON m.event_id = l.event_id"
                " JOIN rooms AS r ON r.room_id = l.room_id"
                " WHERE l.user_id = ? AND l.event_stream_ordering > ?"
                " AND l.event_stream_ordering <= ?"
                " ORDER BY l.event_stream_ordering",
                (user_id, MIN_POSITION if lower is None else lower, upper),
            )

        rows = await self.db.run_interaction("get_local_membership_changes", txn_fn)
        return [RoomsForUser(*row) for row in rows]

    async def get_membership_history(
        self, user_id: str, room_ids: Collection[str], upper: int
    ) -> dict[str, list[tuple[str, int]]]:
        """room -> the user's (membership, stream_ordering) up to ``upper``, oldest first."""
        if not room_ids:
            return {}
        rows = await self.db.run_interaction(
            "get_membership_history",
            lambda txn: txn.select_many(
                "SELECT room_id, membership, event_stream_ordering FROM room_memberships"
                " WHERE {in} AND user_id = ? AND event_stream_ordering <= ?",
                "room_id",
                set(room_ids),
                (user_id, upper),
            ),
        )
        history: dict[str, list[tuple[str, int]]] = {room_id: [] for room_id in room_ids}
        for room_id, membership, ordering in rows:
            history[room_id].append((membership, int(ordering)))
        for entries in history.values():
            entries.sort(key=lambda e: e[1])
        return history

    # -- state -------------------------------------------------------------------------
    async def get_state_for_groups(self, groups: Iterable[int]) -> dict[int, StateMap]:
        """The full state of each group; the uncached ones read in one statement."""
        group_cache = self.state._get_full_state_for_group.cache
        result: dict[int, StateMap] = {}
        missing: list[int] = []
        for group in set(groups):
            cached_state = group_cache.get_if_cached((group,))
            if cached_state is MISSING:
                missing.append(group)
            else:
                result[group] = cached_state
        if missing:
            rows = await self.db.run_interaction(
                "get_state_for_groups",
                lambda txn: txn.select_many(_GROUPS_STATE_SQL, "id", missing),
            )
            loaded: dict[int, dict[tuple[str, str], str]] = {g: {} for g in missing}
            for group, event_type, state_key, event_id in rows:
                loaded[int(group)][(event_type, state_key)] = event_id
            for group, state in loaded.items():
                frozen = freeze_state(state)
                # Groups are immutable: what we read is what any later read gets.
                self.state.prefill_group(group, frozen)
                result[group] = frozen
        return result

    # -- room summaries ------------------------------------------------------------------
    @cached(max_entries=20_000)
    async def get_room_summary(self, room_id: str) -> RoomSummaryData:
        return (await self._fetch_summaries([room_id]))[room_id]

    @cached_list("get_room_summary", "room_ids")
    async def get_room_summaries(self, room_ids: Collection[str]) -> dict[str, RoomSummaryData]:
        """room -> RoomSummaryData, for many rooms (two statements per 500 rooms)."""
        return await self._fetch_summaries(room_ids)

    async def _fetch_summaries(self, room_ids: Collection[str]) -> dict[str, RoomSummaryData]:
        def txn_fn(txn: Transaction) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
            counts = txn.select_many(
                "SELECT room_id, membership, COUNT(*) FROM current_state_events"
                " WHERE {in} AND type = 'm.room.member' AND membership IN ('join', 'invite')"
                " GROUP BY room_id, membership",
                "room_id",
                set(room_ids),
            )
            heroes = txn.select_many(
                "SELECT room_id, state_key, kind FROM ("
                " SELECT c.room_id, c.state_key, CASE WHEN c.membership IN ('join', 'invite')"
                " THEN 0 ELSE 1 END AS kind, ROW_NUMBER() OVER (PARTITION BY c.room_id"
                " ORDER BY CASE WHEN c.membership IN ('join', 'invite') THEN 0 ELSE 1 END,"
                " m.event_stream_ordering) AS rank_in_room"
                " FROM current_state_events AS c"
                " JOIN room_memberships AS m ON m.event_id = c.event_id"
                " WHERE {in} AND c.type = 'm.room.member'"
                " AND c.membership IN ('join', 'invite', 'leave', 'ban')"
                ") AS ranked WHERE rank_in_room <= ? ORDER BY room_id, rank_in_room",
                "c.room_id",
                set(room_ids),
                (_HERO_CANDIDATES,),
            )
            return counts, heroes

        counts, heroes = await self.db.run_interaction("get_room_summaries", txn_fn)
        joined: dict[str, int] = {}
        invited: dict[str, int] = {}
        for room_id, membership, count in counts:
            (joined if membership == "join" else invited)[room_id] = int(count)
        candidates: dict[str, list[tuple[str, int]]] = {}
        for room_id, user_id, kind in heroes:
            candidates.setdefault(room_id, []).append((user_id, int(kind)))
        return {
            room_id: RoomSummaryData(
                joined.get(room_id, 0), invited.get(room_id, 0), tuple(candidates.get(room_id, ()))
            )
            for room_id in room_ids
        }
