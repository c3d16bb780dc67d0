"""A StateResolutionStore over events held in memory.

For tests, benchmarks and callers that already hold every event they
resolve over. The auth chain difference uses the same converging walk as
the database (atrium.state.auth_chain), fed from a dict.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from atrium.events.event import Event
from atrium.state.auth_chain import auth_chain_difference
from atrium.state.ordering import int_field


class InMemoryStateResolutionStore:
    """Events by ID; implements atrium.state.store.StateResolutionStore."""

    def __init__(self, events: Iterable[Event] = ()) -> None:
        self._events: dict[str, Event] = {}
        # The depth the walk orders events by, computed on demand: the
        # event's `depth`, raised where needed to exceed that of each of its
        # auth events. The walk is exact when depths decrease along
        # auth_events, which `depth` only promises for honest events; for
        # those this is `depth` itself, so the walk still starts at the
        # newest events and stops early.
        self._walk_depths: dict[str, int] = {}
        # auth_event_ids() parses the event each time; walks ask repeatedly.
        self._auth_ids: dict[str, list[str]] = {}
        self.add_events(events)

    def add_events(self, events: Iterable[Event]) -> None:
        for event in events:
            self._events[event.event_id] = event
            self._auth_ids[event.event_id] = event.auth_event_ids()

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
            if event_id in self._events:
                found[event_id] = (self._walk_depth(event_id), self._auth_ids[event_id])
        return found

    def _walk_depth(self, event_id: str) -> int:
        """max(depth, 1 + the walk depth of each known auth event).

        Iterative (auth chains can be thousands of events long). A cycle,
        only possible with forged v1-format IDs, is cut where it closes.
        """
        depths = self._walk_depths
        if event_id in depths:
            return depths[event_id]
        in_progress: set[str] = set()
        stack: list[tuple[str, bool]] = [(event_id, False)]
        while stack:
            current, children_done = stack.pop()
            if current in depths:
                continue
            auth_ids = [a for a in self._auth_ids[current] if a in self._events]
            if children_done:
                below = max((depths.get(a, 0) for a in auth_ids), default=0)
                depths[current] = max(int_field(self._events[current].depth), below + 1)
                in_progress.discard(current)
                continue
            in_progress.add(current)
            stack.append((current, True))
            for auth_id in auth_ids:
                if auth_id not in depths and auth_id not in in_progress:
                    stack.append((auth_id, False))
        return depths[event_id]
