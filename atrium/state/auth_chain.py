"""The auth chain difference of state sets, by one converging walk.

Spec: rooms/v2 "State resolution", Definitions "Auth chain" and "Auth
difference": with C_i the full auth chain of state S_i, the auth difference
is union(C_i) - intersection(C_i).

Which events a state set's full auth chain holds
------------------------------------------------
The spec builds C_i as "the union of the auth chains for each event in S_i",
and an event's auth chain holds its auth events recursively, not the event
itself. Read literally, an event of S_i is in C_i only if some other event
of S_i cites it. We count the state events themselves as part of C_i, i.e.
C_i is S_i closed under `auth_events`, because:

* The two readings only differ on events that are in EVERY state set (any
  other state event is in the conflicted state set, so in the full
  conflicted set either way). Such an event is agreed by all forks; the
  literal reading would still put it in the auth difference whenever one
  fork happens to hold a later event citing it and another does not, and
  it would then be re-applied by the iterative auth checks among older
  events of the same key, a state reset that step 5 only partly hides.
* It is what deployed servers compute (Synapse's auth chain difference, by
  chain cover or by its breadth-first walk, seeds each set with its own
  events), and state resolution only works if servers agree.

The walk
--------
Rather than load every full auth chain, all chains are walked together from
the newest events down, in one max-heap ordered by (depth, event ID). Every
event carries a bitmask of the state sets known to reach it: events of set
i start with bit i, and popping an event ORs its mask into its auth events.
An event whose mask gains bits after it was popped is pushed again, so its
auth events get the new bits even when depths are out of order. The walk
stops as soon as every event still waiting (in the heap or about to be
fetched) is reached by all sets: everything below those events is in every
chain. The difference is then every event seen with an incomplete mask.

Exactness needs `depth` to decrease along `auth_events` (true of honest
events: an auth event is an ancestor of the event in the room DAG). Where a
malicious depth breaks that below the point where the walk stops, an event
in every chain can be reported too; the answer is always a superset of the
true difference, never missing an event of it (mask bits are only ever set
by real paths, and events never seen are below fully reached ones).

A store should therefore feed the walk, as "depth", the event's `depth`
raised where needed to exceed the walk depth of each of its auth events
(computed once when the event is persisted, and equal to `depth` for honest
events): exact for any input, and still largest for the newest events, so
the walk stops near the top of the room. (Ordering by the length of the
longest auth_events path instead would also be exact, but puts every
membership event just above the create and power levels events, so the
walk would wade through all of them before stopping.)

Events are fetched in batches, one call of ``fetch`` per step down the
frontier, so a database implementation makes one query per step. ``fetch``
may return more events than asked for (prefetching further down the chain);
they are kept and not asked for again. An event it does not return is
treated as having no auth events and, not knowing its depth, is processed
last.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence

# event IDs -> {event_id: (depth, auth_event_ids)} for those it knows.
AuthChainFetcher = Callable[[Collection[str]], Awaitable[Mapping[str, tuple[int, Sequence[str]]]]]


async def auth_chain_difference(
    state_sets: Sequence[Collection[str]], fetch: AuthChainFetcher
) -> set[str]:
    """union(C_i) - intersection(C_i), C_i being set i and its auth chain."""
    if len(state_sets) < 2:
        return set()
    walk = _ConvergingWalk((1 << len(state_sets)) - 1)
    walk.seed(state_sets)
    await walk.run(fetch)
    return walk.difference()


class _ConvergingWalk:
    """The state of one walk; see the module docstring."""

    def __init__(self, full_mask: int) -> None:
        self.full = full_mask
        # Which state sets reach each event seen so far.
        self.masks: dict[str, int] = {}
        # (depth, auth event IDs) of every fetched event.
        self.info: dict[str, tuple[float, Sequence[str]]] = {}
        # Seen but not fetched yet.
        self.pending: set[str] = set()
        # Max-heap (negated depth, event ID) of fetched events to process.
        self.heap: list[tuple[float, str]] = []
        self.queued: set[str] = set()
        # Events of the frontier (pending or queued) not reached by all sets:
        # the walk is over when this is empty.
        self.partial: set[str] = set()

    def seed(self, state_sets: Sequence[Collection[str]]) -> None:
        """Each state set's own events carry its bit (same as reach() on
        each, without its per-call work: states hold thousands of events)."""
        masks = self.masks
        for index, state_set in enumerate(state_sets):
            bit = 1 << index
            for event_id in state_set:
                masks[event_id] = masks.get(event_id, 0) | bit
        self.pending.update(masks)
        full = self.full
        self.partial.update(e for e, mask in masks.items() if mask != full)

    def reach(self, event_id: str, bits: int) -> bool:
        """Add ``bits`` to an event's mask; True if it became pending."""
        old = self.masks.get(event_id)
        new = bits if old is None else old | bits
        if new == old:
            return False
        self.masks[event_id] = new
        newly_pending = False
        if event_id in self.info:
            if event_id not in self.queued:
                self._push(event_id)
        elif event_id not in self.pending:
            self.pending.add(event_id)
            newly_pending = True
        if new == self.full:
            self.partial.discard(event_id)
        else:
            self.partial.add(event_id)
        return newly_pending

    def _push(self, event_id: str) -> None:
        heapq.heappush(self.heap, (-self.info[event_id][0], event_id))
        self.queued.add(event_id)

    async def run(self, fetch: AuthChainFetcher) -> None:
        while self.partial:
            if self.pending:
                batch = list(self.pending)
                self.pending.clear()
                fetched = await fetch(batch)
                for event_id, (depth, auth_ids) in fetched.items():
                    self.info.setdefault(event_id, (depth, auth_ids))
                for event_id in batch:
                    # Unknown events: no auth events, depth unknown so last.
                    self.info.setdefault(event_id, (-math.inf, ()))
                    self._push(event_id)
            self._process_until_fetch_needed()

    def _process_until_fetch_needed(self) -> None:
        """Pop events in depth order while no pending event can come first.

        A pending event found from an event of depth d has depth < d, so
        events of depth >= d - 1 may still be popped before fetching it.
        """
        bound = -math.inf
        heap = self.heap
        while heap and self.partial:
            neg_depth, event_id = heap[0]
            depth = -neg_depth
            if depth < bound:
                return
            heapq.heappop(heap)
            self.queued.discard(event_id)
            self.partial.discard(event_id)
            mask = self.masks[event_id]
            for auth_id in self.info[event_id][1]:
                if self.reach(auth_id, mask):
                    bound = max(bound, depth - 1)

    def difference(self) -> set[str]:
        full = self.full
        return {event_id for event_id, mask in self.masks.items() if mask != full}
