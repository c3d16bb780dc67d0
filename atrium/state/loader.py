"""Events needed during one resolution: the caller's, then the store's.

Resolution looks events up many times (conflicted events, their auth
events, power level chains); ``EventLoader`` asks the store for each
missing event once, in batches, and remembers what the store did not have.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from atrium.events.event import Event
from atrium.state.store import StateResolutionStore


class EventLoader:
    def __init__(
        self,
        room_id: str,
        event_map: Mapping[str, Event] | None,
        store: StateResolutionStore,
    ) -> None:
        self.room_id = room_id
        self.store = store
        self.events: dict[str, Event] = dict(event_map or {})
        self._unknown: set[str] = set()

    async def load(self, event_ids: Iterable[str]) -> None:
        """Make sure every one of these events the store has is loaded.

        Rejected events are loaded too: state resolution handles events
        rejected against the state before them "as usual" (rooms/v2
        "Rejected events"), and leaves out rejected auth events itself.
        """
        wanted = {e for e in event_ids if e not in self.events and e not in self._unknown}
        if not wanted:
            return
        found = await self.store.get_events(wanted, allow_rejected=True)
        for event_id, event in found.items():
            if event.room_id != self.room_id:
                raise ValueError(f"event {event_id} is in room {event.room_id}, not {self.room_id}")
            self.events[event_id] = event
        self._unknown.update(wanted - found.keys())

    async def load_auth_events_of(self, event_ids: Iterable[str]) -> None:
        """Load the auth events of these (already loaded) events."""
        await self.load(
            auth_id
            for event_id in event_ids
            if (event := self.events.get(event_id)) is not None
            for auth_id in event.auth_event_ids()
        )

    def get(self, event_id: str) -> Event | None:
        return self.events.get(event_id)

    def __getitem__(self, event_id: str) -> Event:
        return self.events[event_id]

    def __contains__(self, event_id: object) -> bool:
        return event_id in self.events
