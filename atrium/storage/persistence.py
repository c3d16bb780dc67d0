"""EventPersister: decides what a batch of events changes, then has it written.

Group commit: ``persist_events`` queues the request; one batch is written at
a time, and the next transaction takes everything that queued meanwhile (up
to ``max_batch_events``), so under load many callers share one commit.
Requests are taken in arrival order and a room's events are only ever written
by this one pipeline, so per-room ordering is preserved. If a batch of
several requests fails, each request is retried alone so that one bad
request does not fail the others.

Per room, before writing:
- forward extremities = (old extremities ∪ new events) − prev_events of the
  new events, where a soft-failed, rejected or outlier event never becomes
  one; an event already referenced by a stored event is not one either; and
  when a new event references a soft-failed (or rejected) event, that
  event's own prev_events are removed too, walking back through such
  events, so extremities never pile up behind them;
- current state: unchanged when the extremities are; with one extremity
  state group, that group's state — as a plain delta when the new events
  extend the old extremity linearly; otherwise the resolution of the
  extremities' states. When the batch holds the room's m.room.create event,
  the room version for resolution is read from it, not from the database
  (the rooms row may not be committed yet).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from types import MappingProxyType

import attrs
from prometheus_client import Counter, Histogram
from twisted.internet import defer
from twisted.python.failure import Failure

from atrium.events.event import Event
from atrium.events.room_versions import RoomVersion, get_room_version
from atrium.push.bulk import BulkPushRuleEvaluator
from atrium.state.context import EventContext, StateResolver
from atrium.storage.database import Transaction
from atrium.storage.persist_events import DeltaState, PersistEventStore
from atrium.storage.stores import Stores
from atrium.storage.stores.errors import UnsupportedRoomVersionError
from atrium.storage.stores.events import EventsStore
from atrium.storage.stores.roommember import RoomMemberStore
from atrium.storage.stores.rooms import RoomStore
from atrium.storage.stores.state import StateGroupStore, StateKey, StateMap
from atrium.util.caches.deferred_cache import MISSING
from atrium.util.clock import Clock

logger = logging.getLogger(__name__)

EventAndContext = tuple[Event, EventContext]

# Longest chain of in-batch delta links followed for the current-state fast path.
_MAX_DELTA_WALK = 1000


EVENTS_PERSISTED = Counter("atrium_events_persisted_total", "Events persisted by this process")
PERSIST_BATCH_SECONDS = Histogram(
    "atrium_event_persist_batch_seconds",
    "Time to persist one group-commit batch of events",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PERSIST_BATCH_EVENTS = Histogram(
    "atrium_event_persist_batch_events",
    "Events per group-commit batch",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500),
)


@attrs.define
class _Request:
    items: list[EventAndContext]
    backfilled: bool
    deferred: defer.Deferred[int]


def _is_accepted_dag_event(event: Event, context: EventContext) -> bool:
    """Whether the event may become a forward extremity."""
    meta = event.internal_metadata
    return not (meta.outlier or meta.soft_failed or context.rejected or event.rejected_reason)


class EventPersister:
    """Persists events through a PersistEventStore, one batch at a time."""

    def __init__(
        self,
        *,
        events: EventsStore,
        state: StateGroupStore,
        members: RoomMemberStore,
        rooms: RoomStore,
        persist_store: PersistEventStore,
        resolver: StateResolver,
        max_batch_events: int = 500,
        push_evaluator: BulkPushRuleEvaluator | None = None,
    ) -> None:
        self.events = events
        self.push_evaluator = push_evaluator
        self.state = state
        self.members = members
        self.rooms = rooms
        self.persist_store = persist_store
        self.resolver = resolver
        self.max_batch_events = max_batch_events
        self._queue: list[_Request] = []
        self._running = False

    # -- public -----------------------------------------------------------------------
    async def persist_event(
        self, event: Event, context: EventContext, backfilled: bool = False
    ) -> int:
        return await self.persist_events([(event, context)], backfilled)

    async def persist_events(
        self, events_and_contexts: Iterable[EventAndContext], backfilled: bool = False
    ) -> int:
        """Persist events (in DAG order: prev events first); returns a stream position.

        The position is the highest stream ordering among these events: once
        the events stream reaches it, they are all visible. Events already
        stored are not written again; their stored stream_ordering is set on
        the given objects.
        """
        request = _Request(list(events_and_contexts), backfilled, defer.Deferred())
        self._queue.append(request)
        if not self._running:
            self._running = True
            defer.ensureDeferred(self._run())
        return await request.deferred

    # -- group commit ---------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            while self._queue:
                batch = self._take_batch()
                await self._process(batch)
        finally:
            self._running = False

    def _take_batch(self) -> list[_Request]:
        first = self._queue.pop(0)
        batch = [first]
        total = len(first.items)
        while self._queue:
            nxt = self._queue[0]
            if nxt.backfilled != first.backfilled or total + len(nxt.items) > self.max_batch_events:
                break
            batch.append(self._queue.pop(0))
            total += len(nxt.items)
        return batch

    async def _process(self, requests: list[_Request]) -> None:
        batch = [item for r in requests for item in r.items]
        started = time.perf_counter()
        try:
            await self._persist_batch(batch, requests[0].backfilled)
            PERSIST_BATCH_SECONDS.observe(time.perf_counter() - started)
            PERSIST_BATCH_EVENTS.observe(len(batch))
            EVENTS_PERSISTED.inc(len(batch))
        except Exception:
            failure = Failure()
            if len(requests) == 1:
                requests[0].deferred.errback(failure)
                return
            logger.warning("Batch of %d requests failed; retrying each alone", len(requests))
            for request in requests:
                await self._process([request])
            return
        for request in requests:
            orderings = [e.internal_metadata.stream_ordering for e, _ in request.items]
            known = [o for o in orderings if o is not None]
            position = max(known) if known else self.events.get_current_events_token()
            request.deferred.callback(position)

    # -- one batch ---------------------------------------------------------------------------
    async def _persist_batch(self, items: list[EventAndContext], backfilled: bool) -> None:
        items, backward = await self._prepare(items)
        if not items:
            return
        extremities: dict[str, frozenset[str]] = {}
        deltas: dict[str, DeltaState] = {}
        full_states: dict[str, StateMap] = {}
        known_stored: set[str] = set()
        if not backfilled:
            by_room: dict[str, list[EventAndContext]] = {}
            for item in items:
                by_room.setdefault(item[0].room_id, []).append(item)
            batch_map = {e.event_id: (e, c) for e, c in items}
            for room_id, room_items in by_room.items():
                old = await self.events.get_latest_event_ids_in_room(room_id)
                # Forward extremities are stored, accepted, non-outlier events.
                known_stored |= old
                new = await self._new_forward_extremities(room_items, old, batch_map, backward)
                if new == old:
                    continue
                extremities[room_id] = new
                computed = await self._state_delta(room_id, items, old, new)
                if computed is not None:
                    deltas[room_id] = computed[0]
                    if computed[1] is not None:
                        full_states[room_id] = computed[1]
        # Push rules see the room as it was before this batch (its members,
        # power levels); the actions are written with the events.
        push_actions = {}
        if not backfilled and self.push_evaluator is not None:
            push_actions = await self.push_evaluator.actions_for_batch(items)
        cached_states = {
            r: self.members.get_current_state_ids.cache.get_if_cached((r,)) for r in deltas
        }
        await self.persist_store.persist_events_and_state_updates(
            items,
            new_forward_extremities=extremities,
            state_deltas=deltas,
            backfilled=backfilled,
            filled_backward_extremities=backward,
            known_stored=known_stored,
            push_actions=push_actions,
        )
        # The new current state is known here: cache it rather than make the
        # next reader (often the next event's auth) load the whole room.
        for room_id, delta in deltas.items():
            new_state = full_states.get(room_id)
            old_state = cached_states[room_id]
            if new_state is None and old_state is not MISSING and not delta.to_delete:
                merged = dict(old_state)
                merged.update(delta.to_insert)
                new_state = merged
            if new_state is not None:
                self.members.get_current_state_ids.prefill(
                    (room_id,), MappingProxyType(dict(new_state))
                )

    async def _prepare(
        self, items: list[EventAndContext]
    ) -> tuple[list[EventAndContext], set[str]]:
        """Drop events stored before (or twice in the batch); find backward extremities.

        One transaction: which events are stored already (persisting is
        idempotent; their stored stream_ordering is set on the given objects),
        and which of the new ones are backward extremities — exactly the new
        events some stored non-outlier event already names as a prev_event.
        """
        unique: dict[str, EventAndContext] = {}
        for event, context in items:
            unique.setdefault(event.event_id, (event, context))

        def txn_fn(txn: Transaction) -> tuple[set[str], set[str]]:
            seen = {
                r[0]
                for r in txn.select_many(
                    "SELECT event_id FROM events WHERE {in}", "event_id", unique
                )
            }
            backward = {
                r[0]
                for r in txn.select_many(
                    "SELECT event_id FROM event_backward_extremities WHERE {in}",
                    "event_id",
                    [e for e in unique if e not in seen],
                )
            }
            return seen, backward

        seen, backward = await self.events.db.run_interaction("persist_prepare", txn_fn)
        if seen:
            stored = await self.events.get_events(seen, allow_rejected=True)
            for event, _ in items:
                existing = stored.get(event.event_id)
                if existing is not None:
                    meta = event.internal_metadata
                    meta.stream_ordering = existing.internal_metadata.stream_ordering
                    meta.instance_name = existing.internal_metadata.instance_name
        return [item for event_id, item in unique.items() if event_id not in seen], backward

    # -- forward extremities -------------------------------------------------------------------
    async def _new_forward_extremities(
        self,
        room_items: Sequence[EventAndContext],
        old: frozenset[str],
        batch_map: Mapping[str, EventAndContext],
        backward: Collection[str],
    ) -> frozenset[str]:
        accepted = [e for e, c in room_items if _is_accepted_dag_event(e, c)]
        if not accepted:
            return old
        accepted_ids = {e.event_id for e in accepted}
        prevs = {p for e in accepted for p in e.prev_event_ids()}
        result = (set(old) | accepted_ids) - prevs
        # A new event a stored event already builds on is not a tip of the
        # DAG; only backward extremities can be such events.
        late = accepted_ids.intersection(backward)
        if late:
            result -= await self._referenced_by_stored_events(late)
        # prev_events outside the old extremities and the batch's accepted
        # events may be soft-failed or rejected: remove what they built on.
        suspects = {p for p in prevs if p not in old and p not in accepted_ids}
        if suspects:
            result -= await self._prevs_behind_unaccepted(suspects, batch_map)
        return frozenset(result) if result else old

    async def _referenced_by_stored_events(self, event_ids: Collection[str]) -> set[str]:
        rows = await self.events.db.run_interaction(
            "get_events_which_are_prevs",
            lambda txn: txn.select_many(
                "SELECT DISTINCT ed.prev_event_id FROM event_edges AS ed"
                " JOIN events AS e ON e.event_id = ed.event_id"
                " WHERE {in} AND e.outlier = FALSE AND e.soft_failed = FALSE"
                " AND e.rejection_reason IS NULL",
                "ed.prev_event_id",
                event_ids,
            ),
        )
        return {r[0] for r in rows}

    async def _prevs_behind_unaccepted(
        self, event_ids: set[str], batch_map: Mapping[str, EventAndContext]
    ) -> set[str]:
        """prev_events of the given soft-failed/rejected events, walking back through such events."""
        removed: set[str] = set()
        visited: set[str] = set()
        frontier = set(event_ids)
        while frontier:
            visited |= frontier
            found: dict[str, list[str]] = {}
            in_db: list[str] = []
            for event_id in frontier:
                item = batch_map.get(event_id)
                if item is None:
                    in_db.append(event_id)
                elif not item[0].internal_metadata.outlier and not _is_accepted_dag_event(*item):
                    found[event_id] = item[0].prev_event_ids()
            if in_db:
                rows = await self.events.db.run_interaction(
                    "get_prevs_of_unaccepted_events",
                    lambda txn, ids=in_db: txn.select_many(
                        "SELECT e.event_id, ed.prev_event_id FROM events AS e"
                        " JOIN event_edges AS ed ON ed.event_id = e.event_id"
                        " WHERE {in} AND e.outlier = FALSE"
                        " AND (e.soft_failed = TRUE OR e.rejection_reason IS NOT NULL)",
                        "e.event_id",
                        ids,
                    ),
                )
                for event_id, prev_id in rows:
                    found.setdefault(event_id, []).append(prev_id)
            frontier = set()
            for prev_ids in found.values():
                removed.update(prev_ids)
                frontier.update(p for p in prev_ids if p not in visited)
        return removed

    # -- current state ---------------------------------------------------------------------------
    async def _state_delta(
        self,
        room_id: str,
        items: Sequence[EventAndContext],
        old: frozenset[str],
        new: frozenset[str],
    ) -> tuple[DeltaState, StateMap | None] | None:
        """The change of current state, and the full new state when it was computed."""
        contexts = {e.event_id: c for e, c in items}
        known: dict[int, StateMap] = {}
        for _, context in items:
            known.update(context.known_states())
        groups: dict[str, int] = {}
        lookup = []
        for event_id in new:
            extremity_context = contexts.get(event_id)
            if extremity_context is not None and extremity_context.state_group_after is not None:
                groups[event_id] = extremity_context.state_group_after
            else:
                lookup.append(event_id)
        if lookup:
            groups.update(await self.state.get_state_groups_for_events(lookup))
        if len(groups) != len(new):
            logger.warning(
                "Not updating current state of %s: no state for extremities %s",
                room_id,
                sorted(set(new) - set(groups)),
            )
            return None
        new_groups = sorted(set(groups.values()))

        if len(new_groups) == 1:
            new_group = new_groups[0]
            old_group = await self._single_group_of(old)
            if old_group is not None:
                if old_group == new_group:
                    return None
                delta = _delta_along_chain(new_group, old_group, items)
                if delta is not None:
                    return DeltaState(to_insert=delta), None
            new_state = known.get(new_group)
            if new_state is None:
                new_state = await self.state.get_state_ids_for_group(new_group)
        else:
            room_version = await self._room_version_for(room_id, items)
            new_state = await self.resolver.resolve_groups(
                room_id,
                room_version,
                new_groups,
                known,
                {e.event_id: e for e, _ in items if e.room_id == room_id},
            )
        current = await self.members.get_current_state_ids(room_id)
        to_delete = [k for k in current if k not in new_state]
        to_insert = {k: v for k, v in new_state.items() if current.get(k) != v}
        return DeltaState(to_delete, to_insert), new_state

    async def _single_group_of(self, event_ids: Collection[str]) -> int | None:
        if not event_ids:
            return None
        groups = await self.state.get_state_groups_for_events(event_ids)
        distinct = set(groups.values())
        if len(groups) != len(event_ids) or len(distinct) != 1:
            return None
        return distinct.pop()

    async def _room_version_for(
        self, room_id: str, items: Sequence[EventAndContext]
    ) -> RoomVersion:
        for event, _ in items:
            if event.room_id == room_id and event.type == "m.room.create" and event.state_key == "":
                identifier = event.content.get("room_version", "1")
                version = get_room_version(str(identifier))
                if version is None:
                    raise UnsupportedRoomVersionError(str(identifier))
                return version
        return await self.rooms.get_room_version(room_id)


def _delta_along_chain(
    new_group: int, old_group: int, items: Sequence[EventAndContext]
) -> dict[StateKey, str] | None:
    """The state change from old_group to new_group along the batch's delta links.

    None when new_group does not descend from old_group through groups
    allocated in this batch (then the full state has to be compared).
    """
    links: dict[int, tuple[int, StateMap]] = {}
    for _, context in items:
        for write in context.state_group_writes:
            if write.prev_group is not None and write.delta_ids is not None:
                links[write.group] = (write.prev_group, write.delta_ids)
    delta: dict[StateKey, str] = {}
    group = new_group
    for _ in range(_MAX_DELTA_WALK):
        if group == old_group:
            return delta
        link = links.get(group)
        if link is None:
            return None
        group, step = link
        # Walking from the newest group back: the first value seen for a key wins.
        for key, event_id in step.items():
            delta.setdefault(key, event_id)
    return None


def build_event_persister(
    stores: Stores,
    *,
    clock: Clock,
    instance_name: str,
    is_mine: Callable[[str], bool],
    resolver: StateResolver | None = None,
    max_batch_events: int = 500,
    push_evaluator: BulkPushRuleEvaluator | None = None,
) -> EventPersister:
    """The event-writing side over a set of read stores (events-writer processes only)."""
    persist_store = PersistEventStore(
        stores.db,
        events=stores.events,
        state=stores.state,
        invalidator=stores.invalidator,
        clock=clock,
        instance_name=instance_name,
        is_mine=is_mine,
    )
    return EventPersister(
        events=stores.events,
        state=stores.state,
        members=stores.members,
        rooms=stores.rooms,
        persist_store=persist_store,
        resolver=resolver or StateResolver(stores.events, stores.state),
        max_batch_events=max_batch_events,
        push_evaluator=push_evaluator,
    )
