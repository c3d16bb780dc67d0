"""State resolution v2 (room versions 2 to 11) and v2.1 (room version 12).

Spec: rooms/v2 "State resolution" (fragment v2-state-res): Definitions and
the five-step Algorithm. rooms/v12 "State resolution" changes two things
(StateResolutionVersion.V2_1): the full conflicted set also holds the
*conflicted state subgraph*, and the iterative auth checks of step 2 start
from an empty state map instead of the unconflicted state map. The orderings live in atrium.state.ordering, the
auth difference in atrium.state.auth_difference / auth_chain.

One interpretation to know about: step 1 enlarges the power events with
"the events in the auth chain of P which also belong to the full conflicted
set". We follow `auth_events` links from P through events of the full
conflicted set only, and the topological ordering uses the links between
those events. An event of the full conflicted set that P reaches only
through events outside it is one that every state's auth chain holds
(anything below an event outside the set is in every chain), i.e. an old,
superseded conflicted state event; deployed servers leave such events to
the mainline pass too, and agreeing with them is what makes rooms converge.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from atrium.auth.rules import AuthError, auth_types_for_event, check_state_dependent_auth_rules
from atrium.events.event import Event
from atrium.events.room_versions import RoomVersion, StateResolutionVersion
from atrium.state.auth_difference import get_auth_difference
from atrium.state.loader import EventLoader
from atrium.state.ordering import POWER_LEVELS, mainline_order, reverse_topological_power_order
from atrium.state.store import StateMap


def separate(state_sets: Sequence[StateMap]) -> tuple[StateMap, set[str]]:
    """The unconflicted state map and the conflicted state set.

    A key is unconflicted when EVERY state maps it to the same event; a key
    missing from some state makes the events of the others conflicted.
    """
    # Set operations on the (key, event ID) pairs: states share most of
    # their thousands of entries, and this keeps the work in C.
    first, rest = state_sets[0], state_sets[1:]
    unconflicted_items = set(first.items()).intersection(*(state.items() for state in rest))
    all_items = set(first.items()).union(*(state.items() for state in rest))
    unconflicted: StateMap = dict(unconflicted_items)
    conflicted = {event_id for _, event_id in all_items - unconflicted_items}
    return unconflicted, conflicted


def is_power_event(event: Event) -> bool:
    """rooms/v2 "Power events": events that might take an ability away."""
    if event.state_key is None:
        return False
    if event.type in ("m.room.power_levels", "m.room.join_rules"):
        return True
    return (
        event.type == "m.room.member"
        and event.membership in ("leave", "ban")
        and event.sender != event.state_key
    )


async def resolve_v2(
    room_id: str,
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, Event],
    loader: EventLoader,
) -> StateMap:
    unconflicted, conflicted = separate(state_sets)
    if not conflicted:
        return unconflicted

    auth_difference = await get_auth_difference(
        room_id, [set(state.values()) for state in state_sets], event_map, loader.store
    )
    full_conflicted = conflicted | auth_difference
    v2_1 = room_version.state_res == StateResolutionVersion.V2_1
    if v2_1:
        full_conflicted |= await conflicted_state_subgraph(conflicted, loader)
    await loader.load(full_conflicted)
    # An event nobody can produce cannot take part (nor be authorised).
    full_conflicted = {e for e in full_conflicted if e in loader}
    await loader.load_auth_events_of(full_conflicted)
    # The iterative auth checks read state entries of the keys these events
    # need: conflicted ones are loaded above, load the unconflicted ones.
    needed_keys = {
        key for e in full_conflicted for key in auth_types_for_event(room_version, loader[e])
    }
    await loader.load(unconflicted[key] for key in needed_keys if key in unconflicted)

    # Step 1: power events and their auth chains within the full conflicted set.
    power_events = _with_auth_ancestors(
        (e for e in full_conflicted if is_power_event(loader[e])), full_conflicted, loader.events
    )
    power_order = reverse_topological_power_order(power_events, loader.events)
    # Step 2 (v2.1: from an empty state map; events take what they need
    # from their own auth events).
    base: StateMap = {} if v2_1 else unconflicted
    partial = iterative_auth_checks(room_version, power_order, base, loader.events)
    # Step 3: the rest, by mainline of the power levels resolved so far.
    others = full_conflicted - power_events
    other_order = await mainline_order(others, partial.get(POWER_LEVELS), loader)
    # Step 4.
    partial = iterative_auth_checks(room_version, other_order, partial, loader.events)
    # Step 5.
    partial.update(unconflicted)
    return partial


async def conflicted_state_subgraph(conflicted: Collection[str], loader: EventLoader) -> set[str]:
    """rooms/v12 "Conflicted state subgraph": every event on an `auth_events`
    path from one conflicted state event to another (endpoints included).

    An event is on such a path when a conflicted event reaches it (walking
    auth events down) and it reaches a conflicted event. The walk down
    loads the auth chains of the conflicted events level by level; events
    nobody can produce end the walk there.
    """
    auth_ids: dict[str, list[str]] = {}
    frontier = set(conflicted)
    while frontier:
        await loader.load(frontier)
        next_frontier: set[str] = set()
        for event_id in frontier:
            event = loader.get(event_id)
            ids = event.auth_event_ids() if event is not None else []
            auth_ids[event_id] = ids
            next_frontier.update(a for a in ids if a not in auth_ids)
        frontier = next_frontier
    # Events citing each reached event, to climb back up from the
    # conflicted events: whatever climbs to them reaches them.
    cited_by: dict[str, list[str]] = {}
    for event_id, ids in auth_ids.items():
        for auth_id in ids:
            cited_by.setdefault(auth_id, []).append(event_id)
    subgraph = set(conflicted)
    stack = list(subgraph)
    while stack:
        for citing in cited_by.get(stack.pop(), ()):
            if citing not in subgraph:
                subgraph.add(citing)
                stack.append(citing)
    return subgraph


def _with_auth_ancestors(
    start: Iterable[str], within: Collection[str], events: Mapping[str, Event]
) -> set[str]:
    """``start`` plus every event of ``within`` reached from it by
    `auth_events` links through events of ``within``."""
    found = set(start)
    stack = list(found)
    while stack:
        for auth_id in events[stack.pop()].auth_event_ids():
            if auth_id in within and auth_id not in found:
                found.add(auth_id)
                stack.append(auth_id)
    return found


def iterative_auth_checks(
    room_version: RoomVersion,
    event_ids: Iterable[str],
    base_state: StateMap,
    events: Mapping[str, Event],
) -> StateMap:
    """rooms/v2 "Iterative auth checks": apply each event allowed by the
    authorization rules against the state built so far.

    A key the rules need that the state lacks is taken from the event's own
    auth events, unless that auth event was rejected. ``events`` must hold
    the events, their auth events and the state's events for those keys.
    """
    state = dict(base_state)
    for event_id in event_ids:
        event = events[event_id]
        if event.state_key is None:
            continue
        own_auth_events: dict[tuple[str, str], Event] = {}
        for auth_id in event.auth_event_ids():
            auth_event = events.get(auth_id)
            if (
                auth_event is not None
                and auth_event.state_key is not None
                and auth_event.rejected_reason is None
            ):
                own_auth_events[(auth_event.type, auth_event.state_key)] = auth_event
        auth_state: dict[tuple[str, str], Event] = {}
        # The create event is among these keys in every version (v12
        # events do not list it, but auth_event_ids() includes it).
        for key in auth_types_for_event(room_version, event):
            state_event_id = state.get(key)
            state_event = events.get(state_event_id) if state_event_id is not None else None
            if state_event is not None:
                auth_state[key] = state_event
            elif key in own_auth_events:
                auth_state[key] = own_auth_events[key]
        try:
            check_state_dependent_auth_rules(room_version, event, auth_state)
        except AuthError:
            continue
        state[(event.type, event.state_key)] = event_id
    return state
