"""The two orderings of state resolution v2.

Spec: rooms/v2 "State resolution", Definitions "Reverse topological power
ordering" and "Mainline ordering".

Both work on events already loaded by the caller (an ``EventLoader``); the
mainline ordering loads the power levels events it walks through itself.
Per-event results (sender power levels, mainline positions) are computed
once per resolution.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Mapping

from atrium.auth.rules import get_user_power_level
from atrium.events.event import Event
from atrium.state.loader import EventLoader

POWER_LEVELS = ("m.room.power_levels", "")
CREATE = ("m.room.create", "")


def int_field(value: object) -> int:
    """An integer field (depth, origin_server_ts) for sorting. Events are
    checked to carry integers on receipt; anything else sorts as 0 rather
    than break the comparison."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def sender_power_level(event: Event, events: Mapping[str, Event]) -> int | float:
    """The sender's power level "when looking at" the event's auth events.

    Only the power levels and create events matter (the create event names
    the creator, who has 100 in a room without power levels).
    """
    auth_state: dict[tuple[str, str], Event] = {}
    for auth_id in event.auth_event_ids():
        auth_event = events.get(auth_id)
        if auth_event is None or auth_event.state_key != "":
            continue
        key = (auth_event.type, "")
        if key == POWER_LEVELS or key == CREATE:
            auth_state[key] = auth_event
    return get_user_power_level(event.sender, auth_state)


def reverse_topological_power_order(
    event_ids: Collection[str], events: Mapping[str, Event]
) -> list[str]:
    """The events, earliest first, in the lexicographically smallest
    topological order of their auth DAG (Kahn's algorithm, taking the
    smallest ready event each time).

    x < y if x's sender has the greater power level, then the smaller
    origin_server_ts, then the smaller event ID. Edges are the `auth_events`
    links between the given events; every event must be in ``events``
    together with its power levels and create auth events.
    """
    members = set(event_ids)
    waiting_on: dict[str, int] = {}
    dependents: dict[str, list[str]] = {}
    for event_id in members:
        auth_ids = {a for a in events[event_id].auth_event_ids() if a in members and a != event_id}
        waiting_on[event_id] = len(auth_ids)
        for auth_id in auth_ids:
            dependents.setdefault(auth_id, []).append(event_id)

    def sort_key(event_id: str) -> tuple[int, int, str]:
        event = events[event_id]
        return (-sender_power_level(event, events), int_field(event.origin_server_ts), event_id)

    ready = [sort_key(e) for e, count in waiting_on.items() if count == 0]
    heapq.heapify(ready)
    ordered: list[str] = []
    while ready:
        event_id = heapq.heappop(ready)[2]
        ordered.append(event_id)
        for dependent in dependents.get(event_id, ()):
            waiting_on[dependent] -= 1
            if waiting_on[dependent] == 0:
                heapq.heappush(ready, sort_key(dependent))

    if len(ordered) < len(members):
        # An auth_events cycle, only possible with forged v1-format event
        # IDs: no topological order exists. Keep the events, deterministically.
        done = set(ordered)
        ordered.extend(sorted((e for e in members if e not in done), key=sort_key))
    return ordered


async def mainline_order(
    event_ids: Collection[str], power_levels_id: str | None, loader: EventLoader
) -> list[str]:
    """The events in the mainline ordering based on ``power_levels_id``.

    x < y if x's mainline position is greater (x is based on an older power
    levels event), then the smaller origin_server_ts, then the smaller event
    ID. The events must be loaded with their auth events.
    """
    positions = await MainlinePositions.build(power_levels_id, loader)
    await positions.compute(event_ids)

    def sort_key(event_id: str) -> tuple[float, int, str]:
        event = loader[event_id]
        return (-positions.of_event(event_id), int_field(event.origin_server_ts), event_id)

    return sorted(event_ids, key=sort_key)


class MainlinePositions:
    """Mainline positions of events relative to one power levels event P.

    The mainline of P is P, the power levels event among P's auth events,
    that one's, and so on. An event's position is the index on the mainline
    of the first power levels event met walking the same way from the event
    (the event itself excluded), or infinity if none is met.
    """

    def __init__(self, mainline: list[str], loader: EventLoader) -> None:
        self._loader = loader
        # Position of every power levels event seen: on the mainline, its
        # index; otherwise the position reached from it (itself included).
        self._from_pl: dict[str, float] = {}
        for index, event_id in enumerate(mainline):
            self._from_pl[event_id] = index
        self._of_event: dict[str, float] = {}

    @classmethod
    async def build(cls, power_levels_id: str | None, loader: EventLoader) -> MainlinePositions:
        mainline: list[str] = []
        seen: set[str] = set()
        current = power_levels_id
        while current is not None and current not in seen:
            seen.add(current)
            await loader.load([current])
            if current not in loader:
                break
            mainline.append(current)
            current = await _power_levels_auth_event(current, loader)
        return cls(mainline, loader)

    async def compute(self, event_ids: Collection[str]) -> None:
        """Positions of these events, walking all their power levels chains
        together so each step is one batch of loads."""
        # event -> the power levels event its walk has reached.
        walking: dict[str, str | None] = {}
        paths: dict[str, list[str]] = {}
        for event_id in event_ids:
            if event_id not in self._of_event:
                walking[event_id] = _power_levels_id_in_auth(self._loader[event_id], self._loader)
                paths[event_id] = []
        while walking:
            still: dict[str, str] = {}
            for event_id, pl_id in walking.items():
                if pl_id is None or pl_id in paths[event_id]:
                    # The end of the chain, or a cycle (forged IDs only).
                    position = math.inf
                elif pl_id in self._from_pl:
                    position = self._from_pl[pl_id]
                else:
                    paths[event_id].append(pl_id)
                    still[event_id] = pl_id
                    continue
                self._of_event[event_id] = position
                for passed in paths.pop(event_id):
                    self._from_pl[passed] = position
            if not still:
                break
            steps = set(still.values())
            await self._loader.load(steps)
            await self._loader.load_auth_events_of(steps)
            walking = {}
            for event_id, pl_id in still.items():
                pl_event = self._loader.get(pl_id)
                walking[event_id] = (
                    None if pl_event is None else _power_levels_id_in_auth(pl_event, self._loader)
                )

    def of_event(self, event_id: str) -> float:
        return self._of_event[event_id]


def _power_levels_id_in_auth(event: Event, events: EventLoader) -> str | None:
    """The m.room.power_levels event among the event's (loaded) auth events."""
    for auth_id in event.auth_event_ids():
        auth_event = events.get(auth_id)
        if (
            auth_event is not None
            and auth_event.type == "m.room.power_levels"
            and auth_event.state_key == ""
        ):
            return auth_id
    return None


async def _power_levels_auth_event(event_id: str, loader: EventLoader) -> str | None:
    await loader.load_auth_events_of([event_id])
    return _power_levels_id_in_auth(loader[event_id], loader)
