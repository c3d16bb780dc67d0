"""A StateResolutionStore over events held in memory.

For tests, benchmarks and callers that already hold every event they
resolve over. The auth chain difference uses the same converging walk as
the database (atrium.state.auth_chain), fed from a dict.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from atrium.events.event import Event
from atrium.state.auth_chain import auth_chain_difference


class InMemoryStateResolutionStore:
    """Events by ID; implements atrium.state.store.StateResolutionStore."""

    def __init__(self, events: Iterable[Event] = ()) -> None:
        self._events: dict[str, Event] = {}
        # Length of the longest auth_events path below each event, computed
        # on demand. The walk is exact when its depths decrease along
        # auth_events; a sender's `depth` field only promises that for honest
        # events, so the walk is fed this instead.
        self._auth_depths: dict[str, int] = {}
        self.add_events(events)

    def add_events(self, events: Iterable[Event]) -> None:
        for event in events:
            self._events[event.event_id] = event

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._events

    async def get_events(
        self, event_ids: Collection[str], allow_rejected: bool = False
    ) -> dict[str, Event]:
        found: dict[str, Event] = {}
        for event_id in event_ids:
            event = self._events.get(event_id)
            if event is not None and (allow_rejected or event.rejected_reason is None):
                found[event_id] = event
        return found

    async def get_auth_chain_difference(self, room_id: str, state_sets: list[set[str]]) -> set[str]:
        return await auth_chain_difference(state_sets, self._fetch_auth_info)

    async def _fetch_auth_info(
        self, event_ids: Collection[str]
    ) -> Mapping[str, tuple[int, Sequence[str]]]:
        found: dict[str, tuple[int, Sequence[str]]] = {}
        for event_id in event_ids:
            event = self._events.get(event_id)
            if event is not None:
                found[event_id] = (self._auth_depth(event_id), event.auth_event_ids())
        return found

    def _auth_depth(self, event_id: str) -> int:
        """1 + the largest auth depth of the event's known auth events.

        Iterative (auth chains can be thousands of events long). A cycle,
        only possible with forged v1-format IDs, is cut where it closes.
        """
        depths = self._auth_depths
        if event_id in depths:
            return depths[event_id]
        in_progress: set[str] = set()
        stack: list[tuple[str, bool]] = [(event_id, False)]
        while stack:
            current, children_done = stack.pop()
            if current in depths:
                continue
            auth_ids = [a for a in self._events[current].auth_event_ids() if a in self._events]
            if children_done:
                depths[current] = 1 + max((depths.get(a, 0) for a in auth_ids), default=0)
                in_progress.discard(current)
                continue
            in_progress.add(current)
            stack.append((current, True))
            for auth_id in auth_ids:
                if auth_id not in depths and auth_id not in in_progress:
                    stack.append((auth_id, False))
        return depths[event_id]
