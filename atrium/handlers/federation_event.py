"""Receiving room events from other servers (server-server API "PDUs").

``on_receive_pdu`` runs the checks of "Checks performed on receipt of a
PDU" in order:
1-3. format, signatures, hashes (federation/pdu.py): dropped, or redacted;
4. auth against the event's own auth events (fetched with ``/event_auth``
   when we lack them): failing events are stored *rejected*;
5. auth against the state before the event: rejected;
6. auth against the room's current state: stored *soft-failed* (not served
   to clients, never a forward extremity: storage/persistence.py).

Before that the event's prev_events must be known with their state. When
some are not, we ask the sending server for what lies between our forward
extremities and the event (``/get_missing_events``, bounded), process those
events oldest first, and if a gap remains, take the state before the event
from the sender (``/state_ids``; federation_outliers.py) instead of
computing it from prev_events.

Events are persisted through the event writer of their room (the same path
as local events), so accepted ones reach /sync through the events stream.
Events of one room are processed one at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any
from urllib.parse import quote

from atrium.auth.rules import auth_types_for_event
from atrium.events.event import Event
from atrium.events.room_versions import RoomVersion
from atrium.federation.pdu import (
    PduError,
    check_against_auth_events,
    check_against_state,
    check_signatures_and_hashes,
    event_id_of,
    parse_pdu,
)
from atrium.handlers.federation_outliers import FED_V1, RemoteStateFetcher
from atrium.state.context import StateResolver, compute_event_context
from atrium.storage.stores import Stores
from atrium.storage.stores.errors import NotFoundError, UnsupportedRoomVersionError
from atrium.util.async_helpers import Linearizer

logger = logging.getLogger(__name__)

# /get_missing_events: how many events we ask for, and accept, per gap.
MISSING_EVENTS_LIMIT = 10


class FederationEventHandler:
    def __init__(
        self,
        *,
        stores: Stores,
        resolver: StateResolver,
        sender: Any,
        keyring: Any,
        client: Any,
        server_name: str,
    ) -> None:
        self.stores = stores
        self.resolver = resolver
        self.sender = sender
        self.keyring = keyring
        self.client = client
        self.server_name = server_name
        self.fetcher = RemoteStateFetcher(
            stores=stores, sender=sender, keyring=keyring, client=client
        )
        self._room_lock = Linearizer("federation_room_events")

    # -- entry point ---------------------------------------------------------------------
    async def on_receive_pdu(self, origin: str, pdu: Any) -> str | None:
        """Handle one PDU of a transaction; returns its event ID.

        Raises PduError (carrying the event ID when known) saying why it was
        dropped or rejected.
        """
        room_id = pdu.get("room_id") if isinstance(pdu, dict) else None
        if not isinstance(room_id, str):
            raise PduError("PDU has no room_id")
        room_version = await self._room_version(room_id)
        event_id = event_id_of(room_version, pdu)
        try:
            if not await self._we_are_joined(room_id):
                raise PduError(f"This server is not in room {room_id}")
            event = await check_signatures_and_hashes(self.keyring, parse_pdu(room_version, pdu))
            async with self._room_lock.queue(room_id):
                if await self.stores.events.have_seen_events([event.event_id]):
                    return event.event_id
                await self._handle_new_event(origin, event, fetch_missing=True)
            if event.rejected_reason is not None:
                raise PduError(f"Event rejected: {event.rejected_reason}")
        except PduError as e:
            e.event_id = e.event_id or event_id
            raise
        return event.event_id

    async def _room_version(self, room_id: str) -> RoomVersion:
        try:
            return await self.stores.rooms.get_room_version(room_id)
        except NotFoundError:
            raise PduError(f"Unknown room {room_id}") from None
        except UnsupportedRoomVersionError:
            raise PduError(f"Room {room_id} has a version this server does not support") from None

    async def _we_are_joined(self, room_id: str) -> bool:
        return await self.stores.members.is_host_joined(room_id, self.server_name)

    # -- gaps ----------------------------------------------------------------------------------
    async def _missing_prevs(self, event: Event) -> list[str]:
        """prev_events whose state we do not know (not stored, or outliers)."""
        prevs = event.prev_event_ids()
        groups = await self.stores.state.get_state_groups_for_events(prevs)
        return [p for p in prevs if p not in groups]

    async def _handle_new_event(self, origin: str, event: Event, fetch_missing: bool) -> None:
        state_ids_before = None
        missing = await self._missing_prevs(event)
        if missing and fetch_missing:
            await self._get_missing_events(origin, event)
            missing = await self._missing_prevs(event)
        if missing:
            logger.info(
                "Still missing prev_events %s of %s: taking the state from %s",
                missing[:5],
                event.event_id,
                origin,
            )
            try:
                state_ids_before = await self.fetcher.fetch_state_before(
                    origin, event.room_version, event.room_id, event.event_id
                )
            except Exception as e:
                raise PduError(f"Could not get the state before {event.event_id}: {e}") from None
        await self.process_event(origin, event, state_ids_before)

    async def _get_missing_events(self, origin: str, event: Event) -> None:
        """Fill the gap behind ``event`` with ``/get_missing_events`` (one bounded request)."""
        room_id = event.room_id
        extremities = sorted(await self.stores.events.get_latest_event_ids_in_room(room_id))
        known = await self.stores.events.get_events(extremities)
        min_depth = min((e.depth for e in known.values()), default=0)
        try:
            answer = await self.client.post_json(
                origin,
                f"{FED_V1}/get_missing_events/{quote(room_id, safe='')}",
                {
                    "earliest_events": extremities,
                    "latest_events": [event.event_id],
                    "limit": MISSING_EVENTS_LIMIT,
                    "min_depth": min_depth,
                },
            )
        except Exception as e:
            logger.info("get_missing_events for %s from %s failed: %s", event.event_id, origin, e)
            return
        pdus = answer.get("events") if isinstance(answer, dict) else None
        if not isinstance(pdus, list):
            return
        pulled: list[Event] = []
        for pdu in pdus[:MISSING_EVENTS_LIMIT]:
            try:
                candidate = parse_pdu(event.room_version, pdu)
                if candidate.room_id != room_id:
                    continue
                pulled.append(await check_signatures_and_hashes(self.keyring, candidate))
            except PduError as e:
                logger.info("Dropping a missing event from %s: %s", origin, e)
        seen = await self.stores.events.have_seen_events(e.event_id for e in pulled)
        for missing_event in sorted(pulled, key=lambda e: (e.depth, e.event_id)):
            if missing_event.event_id in seen or missing_event.event_id == event.event_id:
                continue
            try:
                # Events found this way do not start another search.
                await self._handle_new_event(origin, missing_event, fetch_missing=False)
            except PduError as e:
                logger.info("Could not process missing event %s: %s", missing_event.event_id, e)

    # -- checks 4 to 6, then persist --------------------------------------------------------
    async def process_event(
        self,
        origin: str,
        event: Event,
        state_ids_before: dict[tuple[str, str], str] | None = None,
        check_soft_fail: bool = True,
        store_rejected: bool = True,
        backfilled: bool = False,
    ) -> Any:
        """Checks 4-6 and persist (the caller checked signatures and hashes).

        ``state_ids_before`` gives the state before the event outright (e.g.
        from a send_join answer, its events already stored as outliers);
        otherwise it comes from the event's stored prev_events.
        ``check_soft_fail`` is off for the event that joins us to a room: we
        have no current state to check it against yet. With
        ``store_rejected=False`` (an event handed to us directly, e.g. by
        send_join) a rejected or soft-failed event raises PduError and is not
        stored. ``backfilled`` history is persisted below the timeline
        (outside current state and forward extremities), without the
        soft-fail check, which is about the present. Returns the event
        sender's answer: (writer, stream position).
        """
        room_version = event.room_version
        auth_ids = event.auth_event_ids()
        auth_events = await self.stores.events.get_events(auth_ids, allow_rejected=True)
        if len(auth_events) < len(set(auth_ids)):
            try:
                await self.fetcher.fetch_auth_chain(origin, event)
            except Exception as e:
                logger.info("Could not fetch the auth chain of %s: %s", event.event_id, e)
            auth_events = await self.stores.events.get_events(auth_ids, allow_rejected=True)

        # Step 4.
        rejected = check_against_auth_events(event, auth_events)
        context = await compute_event_context(
            event, self.stores.state, self.resolver, state_ids_before=state_ids_before
        )
        types = auth_types_for_event(room_version, event)
        before_ids: Any = {}
        if rejected is None:
            # Step 5.
            before_ids = await context.get_state_ids_before(self.stores.state, types)
            rejected = check_against_state(event, await self._state_events(before_ids.values()))
        if rejected is not None:
            logger.info("Rejecting %s from %s: %s", event.event_id, origin, rejected)
            event.rejected_reason = rejected
            context = context.with_rejection(rejected)
        elif check_soft_fail and not backfilled:
            # Step 6: soft failure against the room's current state.
            current = await self.stores.members.get_current_state_ids(event.room_id)
            current_ids = [current[k] for k in types if k in current]
            if set(current_ids) != set(before_ids.values()):
                reason = check_against_state(event, await self._state_events(current_ids))
                if reason is not None:
                    logger.info("Soft-failing %s from %s: %s", event.event_id, origin, reason)
                    event.internal_metadata.soft_failed = True
        if not store_rejected:
            if event.rejected_reason is not None:
                raise PduError(f"Event not allowed: {event.rejected_reason}", event.event_id)
            if event.internal_metadata.soft_failed:
                raise PduError("Event not allowed by the room's current state", event.event_id)
        return await self.sender.send_events([(event, context)], backfilled=backfilled)

    async def on_send_membership_event(self, origin: str, event: Event) -> Any:
        """A membership event handed to us by send_join/send_leave (checked
        format, signatures and hashes): checks 4-6 against the state at its
        prev_events, which must be known here, then persist.

        Returns the writer's (instance, position), or None when we already
        had it. Raises PduError (nothing stored) when it is not allowed.
        """
        async with self._room_lock.queue(event.room_id):
            if await self.stores.events.have_seen_events([event.event_id]):
                return None
            missing = await self._missing_prevs(event)
            if missing:
                raise PduError(f"Unknown prev_events {missing[:5]}", event.event_id)
            return await self.process_event(origin, event, store_rejected=False)

    def room_lock(self, room_id: str) -> Any:
        """Serialises our handling of one room's events (``async with``)."""
        return self._room_lock.queue(room_id)

    async def _state_events(self, event_ids: Collection[str]) -> dict[tuple[str, str], Event]:
        events = await self.stores.events.get_events(list(event_ids))
        return {(e.type, e.state_key): e for e in events.values() if e.state_key is not None}
