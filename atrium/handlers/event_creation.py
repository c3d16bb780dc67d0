"""Creating a local event and sending it to the events writer.

The path of one message (ARCHITECTURE.md section 1): prev_events are the
room's forward extremities, auth_events are selected from the state before
the event, the event is hashed and signed, checked against the auth rules,
then handed to the events writer for its room, which persists it and
advances the events stream. The caller's answer waits until this process has
applied that stream position (read-your-writes).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from twisted.internet import defer
from twisted.python.failure import Failure

from atrium.auth.rules import AuthError, check_auth_rules_for_event, selected_auth_types
from atrium.errors import Forbidden, MatrixError, NotFound, TooLarge, UnsupportedRoomVersion
from atrium.events.builder import build_event
from atrium.events.event import Event
from atrium.events.room_versions import RoomVersion
from atrium.events.validation import EventValidationError, validate_event
from atrium.state.context import EventContext, StateResolver, compute_event_context
from atrium.storage.stores import Stores
from atrium.storage.stores.errors import NotFoundError, UnsupportedRoomVersionError
from atrium.util.async_helpers import Linearizer

logger = logging.getLogger(__name__)

# Prefer few prev_events: each one makes the DAG wider for every server.
MAX_PREV_EVENTS = 10


class EventSender(Protocol):
    """Hands events to the writer of their room; returns a stream position.

    Locally that is the EventPersister; on a process that does not write the
    room's events it is an HTTP replication client of the right writer.
    """

    async def send_events(
        self,
        events_and_contexts: Sequence[tuple[Event, EventContext]],
        backfilled: bool = False,
    ) -> int: ...


class EventCreationHandler:
    def __init__(
        self,
        *,
        stores: Stores,
        resolver: StateResolver,
        sender: EventSender,
        clock: Any,
        server_name: str,
        signing_key: Any,
        wait_for_position: Any,
    ) -> None:
        self.stores = stores
        self.resolver = resolver
        self.sender = sender
        self.clock = clock
        # (room_id, sender, device_id, txn_id) being sent -> callers waiting for it.
        self._txn_in_flight: dict[tuple[str, str, str, str], list[defer.Deferred[Any]]] = {}
        self.server_name = server_name
        self.signing_key = signing_key
        # Per room, the last event this process created that may not be
        # persisted yet: the next event builds on it, so a burst of sends in
        # one room forms a chain (no forks) while persistence batches them.
        self._tails: dict[str, tuple[Event, EventContext]] = {}
        self._creation_lock = Linearizer("event_creation")
        # Last origin_server_ts given to a v12 create event (see create_event).
        self._last_create_ts = 0
        # async (writer, token) -> None: returns once this process applied
        # `token` of that writer's events stream.
        self.wait_for_position = wait_for_position

    async def get_room_version(self, room_id: str) -> RoomVersion:
        try:
            return await self.stores.rooms.get_room_version(room_id)
        except NotFoundError:
            raise NotFound(f"Unknown room {room_id}") from None
        except UnsupportedRoomVersionError:
            raise UnsupportedRoomVersion(
                "This room's version is not supported by this server"
            ) from None

    async def state_before(
        self,
        room_id: str,
        room_version: RoomVersion,
        prev_event_ids: Sequence[str],
        prev_contexts: Mapping[str, EventContext] | None = None,
    ) -> Mapping[tuple[str, str], str]:
        """The room state at the given prev_events (resolved if they fork)."""
        if not prev_event_ids:
            return {}
        groups: dict[int, None] = {}
        known: dict[int, Any] = {}
        missing = []
        for prev in prev_event_ids:
            ctx = (prev_contexts or {}).get(prev)
            if ctx is not None and ctx.state_group_after is not None:
                groups[ctx.state_group_after] = None
                known.update(ctx.known_states())
            else:
                missing.append(prev)
        if missing:
            for group in (await self.stores.state.get_state_groups_for_events(missing)).values():
                groups[group] = None
        group_list = list(groups)
        if len(group_list) == 1:
            group = group_list[0]
            if group in known:
                return known[group]
            return await self.stores.state.get_state_ids_for_group(group)
        return await self.resolver.resolve_groups(room_id, room_version, group_list, known)

    async def create_event(
        self,
        event_dict: dict[str, Any],
        *,
        room_version: RoomVersion | None = None,
        prev_event_ids: Sequence[str] | None = None,
        prev_contexts: Mapping[str, EventContext] | None = None,
        prev_events: Mapping[str, Event] | None = None,
        txn_id: str | None = None,
        device_id: str | None = None,
        chain: bool = False,
    ) -> tuple[Event, EventContext]:
        """Build, sign and auth-check a new event; raises Forbidden if not allowed.

        ``prev_event_ids``/``prev_contexts``/``prev_events`` let a caller chain
        several new events (room creation) before any is persisted.
        ``chain=True`` (only for events that are sent right away) builds on the
        room's last created event even before it is persisted.
        """
        room_id = event_dict["room_id"]
        if room_version is None:
            room_version = await self.get_room_version(room_id)
        if prev_event_ids is None and not chain:
            prev_event_ids = await self._prev_events_from_extremities(room_id)
        if prev_event_ids is not None:
            return await self._create(
                event_dict,
                room_version,
                prev_event_ids,
                prev_contexts,
                prev_events,
                txn_id,
                device_id,
            )
        async with self._creation_lock.queue(room_id):
            tail = self._tails.get(room_id)
            if tail is not None:
                tail_event, tail_context = tail
                prev_event_ids = [tail_event.event_id]
                prev_contexts = {tail_event.event_id: tail_context}
                prev_events = {tail_event.event_id: tail_event}
            else:
                prev_event_ids = await self._prev_events_from_extremities(room_id)
            event, context = await self._create(
                event_dict,
                room_version,
                prev_event_ids,
                prev_contexts,
                prev_events,
                txn_id,
                device_id,
            )
            self._tails[room_id] = (event, context)
            return event, context

    async def _prev_events_from_extremities(self, room_id: str) -> list[str]:
        extremities = await self.stores.events.get_latest_event_ids_in_room(room_id)
        if not extremities:
            raise NotFound(f"Unknown room {room_id}")
        return sorted(extremities)[:MAX_PREV_EVENTS]

    def _release_tail(self, events: Sequence[Event]) -> None:
        """Once persisted (or failed), the room's tail is read from the database again."""
        for event in events:
            tail = self._tails.get(event.room_id)
            if tail is not None and tail[0].event_id == event.event_id:
                del self._tails[event.room_id]

    async def _create(
        self,
        event_dict: dict[str, Any],
        room_version: RoomVersion,
        prev_event_ids: Sequence[str],
        prev_contexts: Mapping[str, EventContext] | None,
        prev_events: Mapping[str, Event] | None,
        txn_id: str | None,
        device_id: str | None,
    ) -> tuple[Event, EventContext]:
        # None only for a v12 create event, whose ID makes the room ID.
        room_id = event_dict.get("room_id")
        events_store = self.stores.events
        prev_events = prev_events or {}
        depths = [prev_events[p].depth for p in prev_event_ids if p in prev_events]
        stored = [p for p in prev_event_ids if p not in prev_events]
        if stored:
            depths.append(await events_store.get_max_depth_of(stored))
        depth = max(depths, default=0) + 1

        state = await self.state_before(room_id, room_version, prev_event_ids, prev_contexts)
        # Auth events are chosen for the event as it will be; build a draft
        # first to ask which (type, state_key) pairs it needs.
        draft = _draft(event_dict, room_version)
        auth_ids = [state[key] for key in selected_auth_types(room_version, draft) if key in state]

        unsigned = None
        state_key = event_dict.get("state_key")
        replaced = (
            state.get((event_dict["type"], state_key)) if isinstance(state_key, str) else None
        )
        if replaced is not None:
            # What the event replaces, for clients (spec: unsigned.prev_content).
            previous = prev_events.get(replaced) or await events_store.get_event(
                replaced, allow_none=True
            )
            if previous is not None:
                unsigned = {
                    "replaces_state": replaced,
                    "prev_content": previous.content,
                    "prev_sender": previous.sender,
                }
        origin_server_ts = self.clock.time_msec()
        if event_dict["type"] == "m.room.create" and room_version.room_id_is_create_event_id:
            # v12: the room ID is the create event's hash. Two createRoom calls
            # of one user in the same millisecond with the same creation
            # content would build the same event, hence the same room: create
            # events made here get strictly increasing timestamps.
            origin_server_ts = max(origin_server_ts, self._last_create_ts + 1)
            self._last_create_ts = origin_server_ts
        try:
            event = build_event(
                room_version=room_version,
                type=event_dict["type"],
                sender=event_dict["sender"],
                room_id=room_id,
                content=event_dict.get("content", {}),
                state_key=event_dict.get("state_key"),
                redacts=event_dict.get("redacts"),
                prev_event_ids=list(prev_event_ids),
                auth_event_ids=auth_ids,
                depth=depth,
                origin_server_ts=origin_server_ts,
                unsigned=unsigned,
                server_name=self.server_name,
                signing_key=self.signing_key,
            )
            validate_event(room_version, event.get_pdu_json())
        except EventValidationError as e:
            if e.errcode == "M_TOO_LARGE":
                raise TooLarge(e.message) from None
            raise MatrixError(400, e.message, e.errcode) from None
        event.internal_metadata.txn_id = txn_id
        event.internal_metadata.device_id = device_id

        # event.auth_event_ids() adds the implicit create event of v12 rooms.
        auth_events = await self._load(event.auth_event_ids(), prev_events)
        try:
            check_auth_rules_for_event(
                room_version, event, {e.state_key_tuple(): e for e in auth_events.values()}
            )
        except AuthError as e:
            raise Forbidden(e.reason) from None

        context = await compute_event_context(
            event,
            self.stores.state,
            self.resolver,
            prev_contexts=prev_contexts,
            event_map=dict(prev_events),
        )
        return event, context

    async def _load(
        self, event_ids: Sequence[str], pending: Mapping[str, Event]
    ) -> dict[str, Event]:
        found = {e: pending[e] for e in event_ids if e in pending}
        rest = [e for e in event_ids if e not in found]
        if rest:
            found.update(await self.stores.events.get_events(rest))
        return found

    async def send(self, events_and_contexts: Sequence[tuple[Event, EventContext]]) -> int:
        """Persist through the room's writer and wait until we see the result."""
        try:
            writer, token = await self.sender.send_events(events_and_contexts)
        finally:
            self._release_tail([event for event, _ in events_and_contexts])
        await self.wait_for_position(writer, token)
        return token

    async def create_and_send(
        self,
        event_dict: dict[str, Any],
        *,
        txn_id: str | None = None,
        device_id: str | None = None,
    ) -> Event:
        """Create and send one event, idempotently for a client transaction ID.

        Client-server API "Transaction identifiers": a retry with the same
        transaction ID is the same request. A retry that arrives while the
        first is still being sent waits for it and gets its answer (event or
        error), rather than racing it into the unique index of event_txn_id.
        """
        room_id, sender = event_dict["room_id"], event_dict["sender"]
        if txn_id is None or device_id is None:
            event, context = await self.create_event(event_dict, chain=True)
            await self.send([(event, context)])
            return event
        key = (room_id, sender, device_id, txn_id)
        while key in self._txn_in_flight:
            waiter: defer.Deferred[Event | None] = defer.Deferred()
            self._txn_in_flight[key].append(waiter)
            done = await waiter
            if done is not None:
                return done
            # None: the first attempt was cancelled before it finished; try again.
        self._txn_in_flight[key] = []
        try:
            event = await self._create_and_send_txn(event_dict, txn_id, device_id)
        except defer.CancelledError:
            _wake(self._txn_in_flight.pop(key), None)
            raise
        except Exception:
            _wake(self._txn_in_flight.pop(key), Failure())
            raise
        _wake(self._txn_in_flight.pop(key), event)
        return event

    async def _create_and_send_txn(
        self, event_dict: dict[str, Any], txn_id: str, device_id: str
    ) -> Event:
        existing = await self.stores.events.get_event_id_for_txn(
            event_dict["room_id"], event_dict["sender"], device_id, txn_id
        )
        if existing is not None:
            event = await self.stores.events.get_event(existing, allow_rejected=True)
            assert event is not None
            return event
        event, context = await self.create_event(
            event_dict, txn_id=txn_id, device_id=device_id, chain=True
        )
        await self.send([(event, context)])
        return event


def _wake(waiters: list[defer.Deferred[Any]], result: Any) -> None:
    """Resolve the callers waiting on a transaction (those that gave up already are done)."""
    for waiter in waiters:
        if waiter.called:
            continue
        if isinstance(result, Failure):
            waiter.errback(result)
        else:
            waiter.callback(result)


def _draft(event_dict: dict[str, Any], room_version: RoomVersion) -> Event:
    """An unsigned stand-in with the fields auth event selection reads."""
    d = {
        k: v
        for k, v in event_dict.items()
        if k in ("type", "room_id", "sender", "content", "state_key")
    }
    d.setdefault("content", {})
    d.update(prev_events=[], auth_events=[], depth=0, origin_server_ts=0, hashes={}, signatures={})
    if room_version.is_v1_event_ids:
        d["event_id"] = "$draft:" + event_dict["sender"].split(":", 1)[-1]
    return Event(d, room_version)
