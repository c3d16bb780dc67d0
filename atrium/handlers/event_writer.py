"""The events writer as seen from a process that persists events itself."""

from __future__ import annotations

from collections.abc import Sequence

from atrium.events.event import Event
from atrium.replication.publisher import StreamPublisher
from atrium.replication.streams.events import row_for_event
from atrium.state.context import EventContext
from atrium.storage.persistence import EventPersister


class LocalEventWriter:
    """Persists events here (group commit), then publishes the events rows."""

    def __init__(self, persister: EventPersister, publisher: StreamPublisher) -> None:
        self.persister = persister
        self.publisher = publisher

    async def send_events(self, events_and_contexts: Sequence[tuple[Event, EventContext]]) -> int:
        token = await self.persister.persist_events(events_and_contexts)
        rows = [row_for_event(event) for event, _ in events_and_contexts]
        await self.publisher.publish("events", token, rows)
        return token
