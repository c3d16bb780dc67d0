"""State resolution v1 (room version 1).

Spec: rooms/v1 "State resolution". R starts as the union of the states
without the conflicting events; conflicts are then resolved type by type,
power levels, join rules, members, then everything else, each pass
authorising against R as resolved so far.

Two points the spec leaves open, decided so that the result does not depend
on the order of keys or of state sets:

* Keys of the same pass (e.g. the member events of two users) are each
  resolved against R as it was at the start of the pass (conflicted keys
  of that pass are absent from it), and R takes all of them afterwards.
* When no event of an "other" conflict passes auth, the one with the
  lowest depth (then the highest sha1 of its ID) is kept.

A key present in some states and absent from others is not a conflict in
v1 (unlike v2): its event is part of R.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from atrium.auth.rules import AuthError, auth_types_for_event, check_state_dependent_auth_rules
from atrium.events.event import Event
from atrium.events.room_versions import RoomVersion
from atrium.state.loader import EventLoader
from atrium.state.ordering import int_field
from atrium.state.store import StateMap

Key = tuple[str, str]

# The passes of the algorithm that go "first event, then each next one
# while it passes auth", in order.
_AUTH_PASSES = ("m.room.power_levels", "m.room.join_rules", "m.room.member")


def separate(state_sets: Sequence[StateMap]) -> tuple[StateMap, dict[Key, set[str]]]:
    """Keys whose states agree (where present), and the conflicting events
    of the other keys."""
    unconflicted: StateMap = {}
    conflicted: dict[Key, set[str]] = {}
    for state in state_sets:
        for key, event_id in state.items():
            if key in conflicted:
                conflicted[key].add(event_id)
                continue
            current = unconflicted.get(key)
            if current is None:
                unconflicted[key] = event_id
            elif current != event_id:
                del unconflicted[key]
                conflicted[key] = {current, event_id}
    return unconflicted, conflicted


def _sha1(event_id: str) -> int:
    return int(hashlib.sha1(event_id.encode("utf-8")).hexdigest(), 16)


def _ascending_depth(event: Event) -> tuple[int, int]:
    """Ascending depth, then descending sha1(event_id)."""
    return (int_field(event.depth), -_sha1(event.event_id))


async def resolve_v1(
    room_id: str,
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    loader: EventLoader,
) -> StateMap:
    unconflicted, conflicted = separate(state_sets)
    if not conflicted:
        return unconflicted

    await loader.load(e for ids in conflicted.values() for e in ids)
    candidates: dict[Key, list[Event]] = {}
    for key, ids in conflicted.items():
        found = [loader[e] for e in ids if e in loader]
        if found:
            candidates[key] = sorted(found, key=_ascending_depth)
    needed_keys = {
        k
        for events in candidates.values()
        for e in events
        for k in auth_types_for_event(room_version, e)
    }
    await loader.load(unconflicted[k] for k in needed_keys if k in unconflicted)
    # R, as events, for the keys the authorization rules will ask about.
    resolved_state: dict[Key, Event] = {
        k: loader[unconflicted[k]]
        for k in needed_keys
        if k in unconflicted and unconflicted[k] in loader
    }

    resolved: StateMap = {}
    for event_type in _AUTH_PASSES:
        this_pass = {
            key: _resolve_auth_conflict(room_version, events, resolved_state)
            for key, events in candidates.items()
            if key[0] == event_type
        }
        for key, event in this_pass.items():
            resolved[key] = event.event_id
            resolved_state[key] = event
    for key, events in candidates.items():
        if key[0] not in _AUTH_PASSES:
            resolved[key] = _resolve_other_conflict(room_version, events, resolved_state).event_id

    result = dict(unconflicted)
    result.update(resolved)
    return result


def _allowed(
    room_version: RoomVersion,
    event: Event,
    state: dict[Key, Event],
    previous: Event | None = None,
) -> bool:
    """Whether ``event`` is allowed in ``state``, with ``previous`` (the
    event chosen so far for the same key) overriding its entry."""
    auth_state: dict[Key, Event] = {}
    for key in auth_types_for_event(room_version, event):
        if previous is not None and key == (previous.type, previous.state_key):
            auth_state[key] = previous
        elif key in state:
            auth_state[key] = state[key]
    try:
        check_state_dependent_auth_rules(room_version, event, auth_state)
    except AuthError:
        return False
    return True


def _resolve_auth_conflict(
    room_version: RoomVersion, events: list[Event], resolved_state: dict[Key, Event]
) -> Event:
    """Take the first event (ascending depth); then each next one while it
    is allowed in R updated with the one chosen before it."""
    chosen = events[0]
    for event in events[1:]:
        if not _allowed(room_version, event, resolved_state, previous=chosen):
            break
        chosen = event
    return chosen


def _resolve_other_conflict(
    room_version: RoomVersion, events: list[Event], resolved_state: dict[Key, Event]
) -> Event:
    """The highest depth, lowest sha1(event_id) event allowed in R."""
    for event in reversed(events):
        if _allowed(room_version, event, resolved_state):
            return event
    return events[0]
