"""StateGroupStore: state groups — the state of a room at some point of its DAG.

A state group is stored either in full or as a delta against one parent group
(``state_group_edges``). Chains of deltas are bounded (MAX_DELTA_CHAIN
edges): beyond that a group is written in full, so reading any group walks at
most that many edges.

Reading a group is ONE statement for members and non-members alike: a
recursive CTE collects the chain of groups with their distance from the
asked group, joins the state rows of all of them and keeps, per
(type, state_key), the row of the nearest group (a window function).

Groups never change once written, so the group -> StateMap cache is never
invalidated; new groups are put in it when they are allocated (before they
are even written), which is what makes the state of fresh events free to read.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs

from atrium.storage.database import DatabasePool, Transaction
from atrium.storage.id_generators import SequenceGenerator, build_sequence_generator
from atrium.util.caches import LruCache, cached
from atrium.util.caches.deferred_cache import MISSING

StateKey = tuple[str, str]
StateMap = Mapping[StateKey, str]
# A state filter: (type, state_key) pairs; state_key None means every key of the type.
StateTypes = Collection[tuple[str, str | None]]

# Longest chain of delta edges from a group to a fully stored one.
MAX_DELTA_CHAIN = 50
# How many state group IDs to take from the sequence at once.
_ID_BLOCK = 100

_STATE_FOR_GROUP_SQL = """
WITH RECURSIVE chain(state_group, distance) AS (
    SELECT CAST(? AS BIGINT), 0
    UNION ALL
    SELECT e.prev_state_group, c.distance + 1
    FROM state_group_edges AS e JOIN chain AS c ON e.state_group = c.state_group
)
SELECT type, state_key, event_id FROM (
    SELECT s.type, s.state_key, s.event_id,
           ROW_NUMBER() OVER (PARTITION BY s.type, s.state_key ORDER BY c.distance) AS nearest
    FROM chain AS c JOIN state_groups_state AS s ON s.state_group = c.state_group
    WHERE {filter}
) AS ranked
WHERE nearest = 1
"""

_CHAIN_LENGTH_SQL = """
WITH RECURSIVE chain(start, state_group, length) AS (
    SELECT state_group, prev_state_group, 1 FROM state_group_edges WHERE {in}
    UNION ALL
    SELECT c.start, e.prev_state_group, c.length + 1
    FROM state_group_edges AS e JOIN chain AS c ON e.state_group = c.state_group
    WHERE c.length <= ?
)
SELECT start, MAX(length) FROM chain GROUP BY start
"""


def freeze_state(state: Mapping[StateKey, str]) -> StateMap:
    """A read-only view of a private copy: safe to share through caches."""
    return MappingProxyType(dict(state))


def filter_state(state: StateMap, types: StateTypes | None) -> StateMap:
    """The entries of ``state`` matching the filter (all of them for None)."""
    if types is None:
        return state
    wildcard = {t for t, k in types if k is None}
    exact = {(t, k) for t, k in types if k is not None}
    return {key: event_id for key, event_id in state.items() if key[0] in wildcard or key in exact}


def _filter_sql(types: StateTypes | None) -> tuple[str, list[Any]]:
    if types is None:
        return "TRUE", []
    clauses: list[str] = []
    args: list[Any] = []
    for event_type, state_key in types:
        if state_key is None:
            clauses.append("s.type = ?")
            args.append(event_type)
        else:
            clauses.append("(s.type = ? AND s.state_key = ?)")
            args.extend((event_type, state_key))
    return ("(" + " OR ".join(clauses) + ")") if clauses else "FALSE", args


def state_for_group_txn(
    txn: Transaction, group: int, types: StateTypes | None = None
) -> dict[StateKey, str]:
    """The (filtered) state of one group in one statement."""
    where, args = _filter_sql(types)
    rows = txn.select_all(_STATE_FOR_GROUP_SQL.format(filter=where), [group, *args])
    return {(r[0], r[1]): r[2] for r in rows}


@attrs.frozen(slots=True)
class StateGroupWrite:
    """A state group allocated in memory, to be written with its event.

    ``state`` is the group's full state; ``prev_group``/``delta_ids``, when
    set, say that ``state`` equals prev_group's state updated by delta_ids.
    """

    group: int
    room_id: str
    event_id: str
    state: StateMap
    prev_group: int | None = None
    delta_ids: StateMap | None = None


class StateGroupStore:
    """Reads of state groups, allocation of new ones, and their writing."""

    def __init__(
        self,
        db: DatabasePool,
        group_id_gen: SequenceGenerator,
    ) -> None:
        self.db = db
        self._group_id_gen = group_id_gen
        self._free_ids: list[int] = []
        # Both maps are immutable facts about written/allocated groups.
        self._event_to_group: LruCache[str, int] = LruCache(100_000, "event_to_state_group")
        self._chain_length: LruCache[int, int] = LruCache(100_000, "state_group_chain_length")

    @classmethod
    async def create(cls, db: DatabasePool) -> StateGroupStore:
        gen = await build_sequence_generator(db, "state_group_id_seq", "state_groups", "id")
        return cls(db, gen)

    # -- allocation ----------------------------------------------------------------
    async def allocate_state_group_id(self) -> int:
        """A fresh, unique state group ID (taken from the sequence in blocks)."""
        if not self._free_ids:
            ids = await self.db.run_interaction(
                "allocate_state_group_ids", self._group_id_gen.get_next_mult_txn, _ID_BLOCK
            )
            # Another caller may have refilled while we waited; keep both.
            self._free_ids.extend(sorted(ids, reverse=True))
        return self._free_ids.pop()

    def prefill_group(self, group: int, state: StateMap) -> None:
        """Record the state of a group just allocated (it never changes)."""
        self._get_full_state_for_group.prefill((group,), state)

    # -- events -> groups -----------------------------------------------------------
    async def get_state_groups_for_events(self, event_ids: Iterable[str]) -> dict[str, int]:
        """event_id -> group of the state AFTER the event (non-outliers we have)."""
        result: dict[str, int] = {}
        missing: list[str] = []
        for event_id in event_ids:
            group = self._event_to_group.get(event_id)
            if group is None:
                missing.append(event_id)
            else:
                result[event_id] = group
        if missing:
            rows = await self.db.run_interaction(
                "get_state_groups_for_events",
                lambda txn: txn.select_many(
                    "SELECT event_id, state_group FROM event_to_state_groups WHERE {in}",
                    "event_id",
                    set(missing),
                ),
            )
            for event_id, group in rows:
                self._event_to_group.set(event_id, group)
                result[event_id] = group
        return result

    def note_event_groups(self, groups: Mapping[str, int]) -> None:
        """Remember event -> group for events just persisted (writer only)."""
        for event_id, group in groups.items():
            self._event_to_group.set(event_id, group)

    # -- group -> state -------------------------------------------------------------
    # Each entry is a room's whole state at one point: bounded more tightly
    # than the other caches, as big rooms make big entries.
    @cached(max_entries=5_000, name="state_group_cache")
    async def _get_full_state_for_group(self, group: int) -> StateMap:
        state = await self.db.run_interaction("get_state_for_group", state_for_group_txn, group)
        return freeze_state(state)

    async def get_state_ids_for_group(
        self, group: int, types: StateTypes | None = None
    ) -> StateMap:
        """The state of a group, optionally only the given (type, state_key) entries.

        Unfiltered reads go through the group cache; filtered reads of an
        uncached group ask the database for just those rows (one statement)
        rather than load a large room's whole membership.
        """
        cache = self._get_full_state_for_group
        if types is None or cache.cache.get_if_cached((group,)) is not MISSING:
            return filter_state(await cache(group), types)
        return await self.db.run_interaction(
            "get_state_for_group_filtered", state_for_group_txn, group, types
        )

    async def get_state_for_groups(
        self, groups: Iterable[int], types: StateTypes | None = None
    ) -> dict[int, StateMap]:
        result: dict[int, StateMap] = {}
        for group in set(groups):
            result[group] = await self.get_state_ids_for_group(group, types)
        return result

    async def get_state_ids_for_events(
        self, event_ids: Collection[str], types: StateTypes | None = None
    ) -> dict[str, StateMap]:
        """event_id -> state after the event, for the events that have a group."""
        groups = await self.get_state_groups_for_events(event_ids)
        states = await self.get_state_for_groups(groups.values(), types)
        return {event_id: states[group] for event_id, group in groups.items()}

    async def get_state_ids_for_event(
        self, event_id: str, types: StateTypes | None = None
    ) -> StateMap | None:
        return (await self.get_state_ids_for_events([event_id], types)).get(event_id)

    # -- writing (inside the events transaction) -----------------------------------
    def known_chain_lengths(self, groups: Sequence[StateGroupWrite]) -> dict[int, int]:
        """Chain lengths of the parents of ``groups`` this process already knows.

        Called on the reactor thread before the write transaction (the LRU is
        not thread-safe); ``store_state_groups_txn`` asks the database for the rest.
        """
        result: dict[int, int] = {}
        for g in groups:
            if g.prev_group is not None:
                length = self._chain_length.get(g.prev_group)
                if length is not None:
                    result[g.prev_group] = length
        return result

    def store_state_groups_txn(
        self,
        txn: Transaction,
        groups: Sequence[StateGroupWrite],
        known_lengths: Mapping[int, int],
    ) -> None:
        """Write new state groups: a delta when the parent's chain is short, else in full.

        Groups may build on each other (a chain of events in one batch); they
        must come parents first. ``known_lengths`` comes from
        ``known_chain_lengths``.
        """
        if not groups:
            return
        lengths = dict(known_lengths)
        unknown = {
            g.prev_group for g in groups if g.prev_group is not None and g.prev_group not in lengths
        }
        lengths.update(self._chain_lengths_txn(txn, unknown))
        group_rows: list[tuple[Any, ...]] = []
        edge_rows: list[tuple[int, int]] = []
        state_rows: list[tuple[Any, ...]] = []
        new_lengths: dict[int, int] = {}
        for g in groups:
            group_rows.append((g.group, g.room_id, g.event_id))
            length = None
            if g.prev_group is not None and g.delta_ids is not None:
                parent = new_lengths.get(g.prev_group, lengths.get(g.prev_group))
                if parent is not None and parent + 1 <= MAX_DELTA_CHAIN:
                    length = parent + 1
            if length is not None:
                assert g.prev_group is not None and g.delta_ids is not None
                edge_rows.append((g.group, g.prev_group))
                entries: Mapping[StateKey, str] = g.delta_ids
            else:
                length = 0
                entries = g.state
            new_lengths[g.group] = length
            state_rows.extend((g.group, g.room_id, t, k, e) for (t, k), e in entries.items())
        txn.insert_many("state_groups", ("id", "room_id", "event_id"), group_rows)
        txn.insert_many("state_group_edges", ("state_group", "prev_state_group"), edge_rows)
        txn.insert_many(
            "state_groups_state",
            ("state_group", "room_id", "type", "state_key", "event_id"),
            state_rows,
        )
        txn.call_after(self._note_chain_lengths, new_lengths)

    def _note_chain_lengths(self, lengths: Mapping[int, int]) -> None:
        for group, length in lengths.items():
            self._chain_length.set(group, length)

    @staticmethod
    def _chain_lengths_txn(txn: Transaction, groups: Collection[int]) -> dict[int, int]:
        """Delta edges between each group and a full one (capped past the limit)."""
        if not groups:
            return {}
        rows = txn.select_many(_CHAIN_LENGTH_SQL, "state_group", groups, (MAX_DELTA_CHAIN,))
        found = {int(r[0]): int(r[1]) for r in rows}
        # A group with no edge is stored in full: chain length 0.
        return {group: found.get(group, 0) for group in groups}
