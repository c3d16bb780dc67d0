"""resolve_events: the entry point of state resolution.

Spec: server-server API "Room State Resolution" — the state before an event
is the resolution of the states after its prev_events, with the algorithm
of the room version (rooms/v1 for version 1, rooms/v2 for versions 2-11,
rooms/v12 "State resolution" (v2.1) for version 12).
"""

from __future__ import annotations

from collections.abc import Sequence

from atrium.events.event import Event
from atrium.events.room_versions import RoomVersion, StateResolutionVersion
from atrium.state.loader import EventLoader
from atrium.state.store import StateMap, StateResolutionStore
from atrium.state.v1 import resolve_v1
from atrium.state.v2 import resolve_v2


async def resolve_events(
    room_id: str,
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: dict[str, Event] | None,
    store: StateResolutionStore,
) -> StateMap:
    """The resolution of ``state_sets``, as a new state map.

    ``event_map`` holds events the caller already has, persisted or not
    (e.g. events being persisted right now); every other event is read from
    ``store``. The state sets and event_map are not modified.
    """
    if not state_sets:
        return {}
    if len(state_sets) == 1:
        return dict(state_sets[0])
    loader = EventLoader(room_id, event_map, store)
    if room_version.state_res == StateResolutionVersion.V1:
        return await resolve_v1(room_id, room_version, state_sets, loader)
    if room_version.state_res in (StateResolutionVersion.V2, StateResolutionVersion.V2_1):
        return await resolve_v2(room_id, room_version, state_sets, event_map or {}, loader)
    raise ValueError(f"unknown state resolution version {room_version.state_res!r}")
