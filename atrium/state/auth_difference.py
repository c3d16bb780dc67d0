"""The auth difference when some state events are not persisted yet.

The store computes auth chain differences of persisted events only, but
resolution is also asked about states holding events the caller has in
hand and has not persisted (typically the state after a batch of events
being persisted). Those events are handled here, in memory:

Let U be the unpersisted events: events of ``event_map`` the store does not
have, and, recursively, unpersisted auth events of those. For state set S_i
let T_i be the events of U reached from S_i through events of U only, and
B_i the persisted events where that walk stops (the persisted events of
S_i, and persisted auth events of events in T_i). The full auth chain of
S_i is then T_i plus the full auth chain of B_i. A persisted event never
cites an unpersisted one (auth events are persisted first), so the two
parts never share an event, and the auth difference splits the same way:

    (union T_i - intersection T_i) + store difference of the B_i.
"""

from __future__ import annotations

from collections.abc import Mapping

from atrium.events.event import Event
from atrium.state.store import StateResolutionStore


async def get_auth_difference(
    room_id: str,
    state_sets: list[set[str]],
    event_map: Mapping[str, Event],
    store: StateResolutionStore,
) -> set[str]:
    if len(state_sets) < 2:
        return set()
    unpersisted = await _find_unpersisted(state_sets, event_map, store)
    if not unpersisted:
        return await store.get_auth_chain_difference(room_id, state_sets)

    in_memory: list[set[str]] = []
    boundaries: list[set[str]] = []
    for state_set in state_sets:
        reached: set[str] = set()
        boundary: set[str] = set()
        stack = list(state_set)
        while stack:
            event_id = stack.pop()
            if event_id in unpersisted:
                if event_id not in reached:
                    reached.add(event_id)
                    stack.extend(event_map[event_id].auth_event_ids())
            else:
                boundary.add(event_id)
        in_memory.append(reached)
        boundaries.append(boundary)

    difference = set[str]().union(*in_memory) - in_memory[0].intersection(*in_memory[1:])
    difference |= await store.get_auth_chain_difference(room_id, boundaries)
    return difference


async def _find_unpersisted(
    state_sets: list[set[str]], event_map: Mapping[str, Event], store: StateResolutionStore
) -> set[str]:
    """Events of event_map, reachable from the state sets through each
    other, that the store does not have. One store look-up per level."""
    unpersisted: set[str] = set()
    checked: set[str] = set()
    to_check = {e for state_set in state_sets for e in state_set if e in event_map}
    while to_check:
        checked |= to_check
        known = await store.get_events(to_check, allow_rejected=True)
        new = to_check - known.keys()
        unpersisted |= new
        to_check = {
            auth_id
            for event_id in new
            for auth_id in event_map[event_id].auth_event_ids()
            if auth_id in event_map and auth_id not in checked
        }
    return unpersisted
