"""Getting new events to the writer of their room.

Rooms are sharded across the instances in ``stream_writers.events`` by a
stable hash of the room ID, so every process agrees which writer owns a room
without asking anyone. A process that owns the room persists locally
(``LocalEventWriter``); any other process posts the signed events to the
owner's ``send_events`` replication endpoint, where the owner recomputes their
contexts from its own view of the room and persists them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from atrium.events.event import Event, EventInternalMetadata, make_event_from_dict
from atrium.events.room_versions import EventFormatVersion, get_room_version
from atrium.replication.publisher import StreamPublisher
from atrium.replication.streams.events import row_for_event
from atrium.state.context import EventContext, StateResolver, compute_event_context
from atrium.storage.persistence import EventPersister
from atrium.storage.stores.state import StateGroupStore, StateMap

SEND_EVENTS_ENDPOINT = "send_events"


def writer_for_room(room_id: str, writers: Sequence[str]) -> str:
    """The events writer owning ``room_id`` (stable across processes and restarts)."""
    if len(writers) == 1:
        return writers[0]
    digest = hashlib.sha256(room_id.encode("utf-8")).digest()
    return writers[int.from_bytes(digest[:8], "big") % len(writers)]


class LocalEventWriter:
    """Persists events here (group commit), then publishes the events rows."""

    def __init__(
        self, persister: EventPersister, publisher: StreamPublisher, instance_name: str
    ) -> None:
        self.persister = persister
        self.publisher = publisher
        self.instance_name = instance_name
        # Sends between persisting and publishing, and how many ever started.
        self._in_flight = 0
        self._sends_started = 0

    async def send_events(
        self, events_and_contexts: Sequence[tuple[Event, EventContext]]
    ) -> tuple[str, int]:
        self._in_flight += 1
        self._sends_started += 1
        try:
            token = await self.persister.persist_events(events_and_contexts)
            rows = [row_for_event(event) for event, _ in events_and_contexts]
            await self.publisher.publish("events", token, rows)
        finally:
            self._in_flight -= 1
        return self.instance_name, token

    async def advance_if_idle(self, id_gen: Any) -> None:
        """Publish an idle writer's position moved up to the shared sequence.

        Only between sends: a position published while a send is between
        persisting and publishing could overtake that send's rows.
        ``id_gen`` is the events MultiWriterIdGenerator (see ``advance_idle``).
        """
        if self._in_flight:
            return
        started = self._sends_started
        position = await id_gen.advance_idle()
        if position is None or self._in_flight or self._sends_started != started:
            return
        await self.publisher.publish("events", position, [])


def encode_events(
    events_and_contexts: Sequence[tuple[Event, EventContext]],
) -> list[dict[str, Any]]:
    """Events as JSON for the send_events endpoint (PDU plus what is not in it).

    The writer recomputes each context from its own view of the room, except
    what only the sender knows: a rejection (from federation auth checks) and
    a state before the event given outright (a remote server's /state_ids
    or send_join answer, when we lack the prev_events).
    """
    out = []
    for event, context in events_and_contexts:
        meta = event.internal_metadata
        given = context.given_state_before
        out.append(
            {
                "rejected_reason": context.rejected,
                "state_ids_before": (
                    None if given is None else [[t, k, e] for (t, k), e in given.items()]
                ),
                "room_version": event.room_version.identifier,
                "format_version": int(event.format_version),
                "pdu": event.get_dict(),
                "event_id": event.event_id,
                "txn_id": meta.txn_id,
                "device_id": meta.device_id,
                "outlier": meta.outlier,
                "soft_failed": meta.soft_failed,
            }
        )
    return out


def decode_events(items: Any) -> list[tuple[Event, str | None, StateMap | None]]:
    """(event, rejected reason, state before given outright) for each item."""
    if not isinstance(items, list):
        raise ValueError("'events' must be a list")
    events = []
    for item in items:
        room_version = get_room_version(item["room_version"])
        if room_version is None:
            raise ValueError(f"unknown room version {item['room_version']!r}")
        meta = EventInternalMetadata(
            outlier=bool(item.get("outlier")),
            soft_failed=bool(item.get("soft_failed")),
            txn_id=item.get("txn_id"),
            device_id=item.get("device_id"),
        )
        event = make_event_from_dict(
            item["pdu"], room_version, EventFormatVersion(item["format_version"]), meta
        )
        if event.event_id != item["event_id"]:
            raise ValueError(f"event ID mismatch for {item['event_id']}")
        rejected = item.get("rejected_reason")
        if rejected is not None and not isinstance(rejected, str):
            raise ValueError("'rejected_reason' must be a string")
        given = item.get("state_ids_before")
        state: StateMap | None = None
        if given is not None:
            state = {(str(t), str(k)): str(e) for t, k, e in given}
        events.append((event, rejected, state))
    return events


class RoutingEventSender:
    """Sends each room's events to the writer that owns the room."""

    def __init__(
        self,
        instance_name: str,
        writers: Sequence[str],
        local: LocalEventWriter | None,
        call_remote: Callable[[str, str, dict[str, Any]], Any],
    ) -> None:
        self.instance_name = instance_name
        self.writers = list(writers)
        self.local = local
        # async (instance, endpoint name, body) -> json answer
        self.call_remote = call_remote

    async def send_events(
        self, events_and_contexts: Sequence[tuple[Event, EventContext]]
    ) -> tuple[str, int]:
        rooms = {event.room_id for event, _ in events_and_contexts}
        if len(rooms) != 1:
            raise ValueError("one send carries the events of one room")
        writer = writer_for_room(rooms.pop(), self.writers)
        if writer == self.instance_name and self.local is not None:
            return await self.local.send_events(events_and_contexts)
        answer = await self.call_remote(
            writer,
            SEND_EVENTS_ENDPOINT,
            {"events": encode_events(events_and_contexts)},
        )
        return answer["instance"], int(answer["stream_ordering"])


class SendEventsEndpoint:
    """The writer's side of send_events: recompute contexts here, persist."""

    def __init__(
        self, local: LocalEventWriter, state_store: StateGroupStore, resolver: StateResolver
    ) -> None:
        self.local = local
        self.state_store = state_store
        self.resolver = resolver

    async def handle(self, body: dict[str, Any]) -> tuple[int, Any]:
        try:
            events = decode_events(body.get("events"))
        except (KeyError, TypeError, ValueError) as e:
            return 400, {"errcode": "M_BAD_JSON", "error": f"bad send_events body: {e}"}
        contexts: dict[str, EventContext] = {}
        pending: dict[str, Event] = {}
        items = []
        for event, rejected, state_before in events:
            context = await compute_event_context(
                event,
                self.state_store,
                self.resolver,
                prev_contexts=contexts,
                event_map=dict(pending),
                state_ids_before=state_before,
            )
            if rejected is not None:
                event.rejected_reason = rejected
                context = context.with_rejection(rejected)
            contexts[event.event_id] = context
            pending[event.event_id] = event
            items.append((event, context))
        instance, token = await self.local.send_events(items)
        return 200, {"instance": instance, "stream_ordering": token}
