"""EventContext: the room state around one event, as state groups.

``compute_event_context`` works out, before an event is persisted:
- the state BEFORE it: its prev_events' state (after those events); when the
  prev_events disagree, their states are resolved with the event's room
  version (spec rooms/vN "State resolution") into a new group;
- the state AFTER it: for a state event, a new group = before + the event,
  stored as a delta against the before group; otherwise the before group.
Outliers get no state at all (spec server-server "Checks performed on
receipt of a PDU": outliers are not part of the room's known state).

New group IDs are allocated now (from the state group sequence) and their
state is put in the group cache at once; the rows are written later, in the
same transaction as the event, by PersistEventStore (the context carries the
pending writes). A chain of events can be given contexts in one go before
any of them is stored: pass the contexts already computed for the prev
events (``prev_contexts``) and the events themselves (``event_map``).

A context whose event then fails authorisation must be swapped for
``context.with_rejection(reason)`` before any later event's context is
computed from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import attrs

from atrium.events.event import Event
from atrium.events.room_versions import RoomVersion
from atrium.state import resolve_events
from atrium.storage.stores.events import EventsStore
from atrium.storage.stores.state import (
    StateGroupStore,
    StateGroupWrite,
    StateKey,
    StateMap,
    StateTypes,
    filter_state,
    freeze_state,
)
from atrium.util.caches import LruCache


class MissingStateError(Exception):
    """The state before an event cannot be computed from what we hold."""


@attrs.frozen(slots=True)
class EventContext:
    """Where an event sits in the room's state.

    - ``state_group_before``/``state_group_after``: the state before and after
      the event (None for outliers; ``before`` is also None for m.room.create).
    - ``prev_group``/``delta_ids``: when set, the state after the event is
      prev_group's state updated with delta_ids (lets current state be
      updated by a delta instead of a full comparison).
    - ``rejected``: why the event was rejected, if it was (its state does not
      apply: after == before).
    - ``state_group_writes``: groups allocated for this event, still to be
      written with it (parents first).
    - ``unwritten_states``: the states of groups this context refers to that
      may not be in the database yet (its own new groups, and the group of a
      not-yet-persisted prev event it shares), so reading them never depends
      on the group cache keeping them.
    """

    state_group_before: int | None
    state_group_after: int | None
    prev_group: int | None = None
    delta_ids: StateMap | None = None
    rejected: str | None = None
    state_group_writes: tuple[StateGroupWrite, ...] = ()
    unwritten_states: Mapping[int, StateMap] = attrs.field(factory=dict, eq=False, repr=False)
    # The state before the event when it was given outright (not derived
    # from prev_events): another process persisting the event needs it.
    given_state_before: StateMap | None = attrs.field(default=None, eq=False, repr=False)

    @staticmethod
    def for_outlier(rejected: str | None = None) -> EventContext:
        return EventContext(None, None, rejected=rejected)

    @property
    def is_outlier(self) -> bool:
        return self.state_group_after is None

    def with_rejection(self, reason: str) -> EventContext:
        """This context for the event rejected: its own state change is dropped."""
        before_writes = tuple(
            w for w in self.state_group_writes if w.group == self.state_group_before
        )
        prev_group = delta_ids = None
        if before_writes:
            prev_group, delta_ids = before_writes[0].prev_group, before_writes[0].delta_ids
        before = self.state_group_before
        unwritten = {g: s for g, s in self.unwritten_states.items() if g == before}
        return EventContext(
            before,
            before,
            prev_group,
            delta_ids,
            reason,
            before_writes,
            unwritten,
            given_state_before=self.given_state_before,
        )

    def known_states(self) -> Mapping[int, StateMap]:
        """States of groups this context refers to that may not be written yet."""
        return self.unwritten_states

    async def get_state_ids_before(
        self, state_store: StateGroupStore, types: StateTypes | None = None
    ) -> StateMap:
        """The state before the event (what its authorisation is checked against)."""
        return await _state_of(self.state_group_before, self.known_states(), state_store, types)

    async def get_state_ids_after(
        self, state_store: StateGroupStore, types: StateTypes | None = None
    ) -> StateMap:
        return await _state_of(self.state_group_after, self.known_states(), state_store, types)


async def _state_of(
    group: int | None,
    known: Mapping[int, StateMap],
    state_store: StateGroupStore,
    types: StateTypes | None = None,
) -> StateMap:
    if group is None:
        return {}
    state = known.get(group)
    if state is not None:
        return filter_state(state, types)
    return await state_store.get_state_ids_for_group(group, types)


class _ResolutionStore:
    """StateResolutionStore over the database plus events not yet persisted."""

    def __init__(self, events: EventsStore, pending: Mapping[str, Event]) -> None:
        self._events = events
        self._pending = pending

    async def get_events(self, event_ids, allow_rejected: bool = False) -> dict[str, Event]:  # type: ignore[no-untyped-def]
        found: dict[str, Event] = {}
        rest: list[str] = []
        for event_id in event_ids:
            event = self._pending.get(event_id)
            if event is None:
                rest.append(event_id)
            elif allow_rejected or event.rejected_reason is None:
                found[event_id] = event
        if rest:
            found.update(await self._events.get_events(rest, allow_rejected=allow_rejected))
        return found

    async def get_auth_chain_difference(self, room_id: str, state_sets: list[set[str]]) -> set[str]:
        return await self._events.get_auth_chain_difference(
            room_id, state_sets, extra_events=self._pending
        )


class StateResolver:
    """State resolution over state groups, with a cache of recent answers.

    Resolving the same set of groups always gives the same state, so the
    answer is kept (by room and group set) for the next event or the next
    current-state calculation that forks the same way.
    """

    def __init__(self, events: EventsStore, state_store: StateGroupStore) -> None:
        self.events = events
        self.state_store = state_store
        self._cache: LruCache[tuple[str, frozenset[int]], StateMap] = LruCache(
            1000, "state_resolution_by_groups"
        )

    async def resolve_groups(
        self,
        room_id: str,
        room_version: RoomVersion,
        groups: Sequence[int],
        known_states: Mapping[int, StateMap] | None = None,
        event_map: Mapping[str, Event] | None = None,
    ) -> StateMap:
        """The resolved state of several state groups."""
        key = (room_id, frozenset(groups))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        known = known_states or {}
        state_sets = [await _state_of(g, known, self.state_store) for g in sorted(set(groups))]
        resolved = await self.resolve(room_id, room_version, state_sets, event_map)
        frozen = freeze_state(resolved)
        self._cache.set(key, frozen)
        return frozen

    async def resolve(
        self,
        room_id: str,
        room_version: RoomVersion,
        state_sets: Sequence[StateMap],
        event_map: Mapping[str, Event] | None = None,
    ) -> StateMap:
        pending = dict(event_map or {})
        store = _ResolutionStore(self.events, pending)
        return await resolve_events(
            room_id, room_version, [dict(s) for s in state_sets], pending, store
        )


def _smallest_delta(
    state: StateMap, candidates: Mapping[int, StateMap]
) -> tuple[int | None, StateMap | None]:
    """The candidate group ``state`` differs least from, and the delta to it.

    A delta can only add or replace entries: a candidate holding a key the
    new state lacks cannot be a parent.
    """
    best: tuple[int | None, StateMap | None] = (None, None)
    best_size = -1
    for group, base in candidates.items():
        if any(key not in state for key in base):
            continue
        delta = {k: v for k, v in state.items() if base.get(k) != v}
        if best_size < 0 or len(delta) < best_size:
            best, best_size = (group, delta), len(delta)
    return best


async def compute_event_context(
    event: Event,
    state_store: StateGroupStore,
    resolver: StateResolver,
    *,
    prev_contexts: Mapping[str, EventContext] | None = None,
    event_map: Mapping[str, Event] | None = None,
    state_ids_before: StateMap | None = None,
) -> EventContext:
    """The context of a new event (see the module docstring).

    ``state_ids_before`` gives the state before the event outright (e.g. from
    a remote server's /state_ids when we lack its prev_events); otherwise it
    comes from the prev_events, which must be stored non-outliers or have a
    context in ``prev_contexts``. ``event_map`` holds not-yet-stored events
    state resolution may need.
    """
    if event.internal_metadata.outlier:
        return EventContext.for_outlier()
    prev_contexts = prev_contexts or {}
    known: dict[int, StateMap] = {}
    for ctx in prev_contexts.values():
        known.update(ctx.known_states())
    writes: list[StateGroupWrite] = []
    room_id, event_id = event.room_id, event.event_id

    before_group: int | None
    before_state: StateMap | None = None
    before_prev: tuple[int | None, StateMap | None] = (None, None)
    if state_ids_before is not None:
        before_state = freeze_state(state_ids_before)
        before_group = await state_store.allocate_state_group_id()
        writes.append(StateGroupWrite(before_group, room_id, event_id, before_state))
    else:
        groups = await _prev_state_groups(event, prev_contexts, state_store)
        distinct = sorted(set(groups.values()))
        if not distinct:
            before_group = None
            before_state = {}
        elif len(distinct) == 1:
            before_group = distinct[0]
        else:
            before_state = await resolver.resolve_groups(
                room_id, event.room_version, distinct, known, event_map
            )
            parents = {g: await _state_of(g, known, state_store) for g in distinct}
            before_prev = _smallest_delta(before_state, parents)
            before_group = await state_store.allocate_state_group_id()
            writes.append(
                StateGroupWrite(
                    before_group, room_id, event_id, before_state, before_prev[0], before_prev[1]
                )
            )

    after_group: int | None
    if event.is_state():
        key: StateKey = event.state_key_tuple()
        if before_state is None:
            before_state = await _state_of(before_group, known, state_store)
        # A private copy, so a read-only view of it is safe to share.
        after_state = dict(before_state)
        after_state[key] = event_id
        delta = freeze_state({key: event_id})
        new_group = await state_store.allocate_state_group_id()
        after_group = new_group
        writes.append(
            StateGroupWrite(
                new_group, room_id, event_id, MappingProxyType(after_state), before_group, delta
            )
        )
        after_prev: tuple[int | None, StateMap | None] = (before_group, delta)
    else:
        after_group = before_group
        after_prev = before_prev
    unwritten = {w.group: w.state for w in writes}
    if before_group is not None and before_group in known:
        unwritten[before_group] = known[before_group]
    for write in writes:
        state_store.prefill_group(write.group, write.state)
    return EventContext(
        before_group,
        after_group,
        after_prev[0],
        after_prev[1],
        None,
        tuple(writes),
        unwritten,
        given_state_before=before_state if state_ids_before is not None else None,
    )


async def _prev_state_groups(
    event: Event, prev_contexts: Mapping[str, EventContext], state_store: StateGroupStore
) -> dict[str, int]:
    groups: dict[str, int] = {}
    lookup: list[str] = []
    for prev_id in event.prev_event_ids():
        ctx = prev_contexts.get(prev_id)
        if ctx is not None and ctx.state_group_after is not None:
            groups[prev_id] = ctx.state_group_after
        else:
            lookup.append(prev_id)
    if lookup:
        groups.update(await state_store.get_state_groups_for_events(lookup))
    missing = [p for p in event.prev_event_ids() if p not in groups]
    if missing:
        raise MissingStateError(
            f"no state known at prev_events {missing} of {event.event_id}; pass state_ids_before"
        )
    return groups
