"""Fetching state and auth chains from another server, stored as outliers.

When a received event's prev_events cannot be filled in (see
federation_event.py), the state before it is asked of the server that sent
it (``/state_ids``, then ``/event`` for each event we lack, or one
``/state`` when many are missing). When an event's auth events are unknown,
its auth chain is asked for (``/event_auth``).

Fetched events go through the same first checks as any received PDU
(format, signatures, hashes: federation/pdu.py) and the auth rules against
their own auth events, and are stored as *outliers* (server-server API
"Checks performed on receipt of a PDU": they are not part of the room's
known state), rejected ones with their rejection. Events are stored in an
order where each one's auth events come first.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from typing import Any
from urllib.parse import quote

from atrium.events.event import Event
from atrium.events.room_versions import RoomVersion
from atrium.federation.pdu import (
    PduError,
    check_against_auth_events,
    check_signatures_and_hashes,
    parse_pdu,
)
from atrium.state.context import EventContext
from atrium.storage.stores import Stores
from atrium.util.async_helpers import concurrently_execute

logger = logging.getLogger(__name__)

FED_V1 = "/_matrix/federation/v1"
# Above this many missing events, one /state request beats many /event ones.
MAX_SINGLE_EVENT_FETCHES = 50
FETCH_CONCURRENCY = 5
# A state or auth chain bigger than this is not accepted from one answer.
MAX_FETCHED_EVENTS = 20_000


class FetchError(Exception):
    """The remote server could not give us what we needed."""


def _q(value: str) -> str:
    return quote(value, safe="")


class RemoteStateFetcher:
    def __init__(self, *, stores: Stores, sender: Any, keyring: Any, client: Any) -> None:
        self.stores = stores
        self.sender = sender
        self.keyring = keyring
        self.client = client

    # -- state at an event -------------------------------------------------------------
    async def fetch_state_before(
        self, origin: str, room_version: RoomVersion, room_id: str, event_id: str
    ) -> dict[tuple[str, str], str]:
        """The state before ``event_id`` as ``origin`` sees it; its events are stored."""
        answer = await self.client.get_json(
            origin, f"{FED_V1}/state_ids/{_q(room_id)}", args={"event_id": event_id}
        )
        pdu_ids = _id_list(answer, "pdu_ids")
        chain_ids = _id_list(answer, "auth_chain_ids")
        wanted = set(pdu_ids) | set(chain_ids)
        if len(wanted) > MAX_FETCHED_EVENTS:
            raise FetchError(f"state of {len(wanted)} events is more than we accept")
        have = await self.stores.events.have_seen_events(wanted)
        missing = wanted - have
        fetched: dict[str, Event] = {}
        if len(missing) > MAX_SINGLE_EVENT_FETCHES:
            fetched = await self._fetch_full_state(origin, room_version, room_id, event_id)
        elif missing:
            fetched = await self._fetch_events(origin, room_version, room_id, missing)
        await self.persist_outliers(fetched.values())
        state_events = await self.stores.events.get_events(pdu_ids)
        state: dict[tuple[str, str], str] = {}
        for state_id in pdu_ids:
            event = state_events.get(state_id)
            if event is None or event.state_key is None:
                # Not fetched, rejected or not a state event: it cannot be state.
                continue
            state[(event.type, event.state_key)] = state_id
        return state

    async def _fetch_full_state(
        self, origin: str, room_version: RoomVersion, room_id: str, event_id: str
    ) -> dict[str, Event]:
        answer = await self.client.get_json(
            origin, f"{FED_V1}/state/{_q(room_id)}", args={"event_id": event_id}
        )
        if not isinstance(answer, dict):
            raise FetchError("/state answer is not an object")
        pdus = [*_pdu_list(answer, "pdus"), *_pdu_list(answer, "auth_chain")]
        return await self._check_pdus(room_version, room_id, pdus)

    async def _fetch_events(
        self, origin: str, room_version: RoomVersion, room_id: str, event_ids: Collection[str]
    ) -> dict[str, Event]:
        found: dict[str, Event] = {}

        async def fetch_one(event_id: str) -> None:
            try:
                event = await self.fetch_event(origin, room_version, event_id)
            except Exception as e:
                logger.info("Could not fetch %s from %s: %s", event_id, origin, e)
                return
            if event is not None and event.room_id == room_id:
                found[event_id] = event

        await concurrently_execute(fetch_one, sorted(event_ids), FETCH_CONCURRENCY)
        return found

    async def fetch_event(
        self, origin: str, room_version: RoomVersion, event_id: str
    ) -> Event | None:
        """One event by ID (``/event``), checked; None if the answer is not it."""
        answer = await self.client.get_json(origin, f"{FED_V1}/event/{_q(event_id)}")
        pdus = _pdu_list(answer, "pdus")
        if len(pdus) != 1:
            raise FetchError(f"/event answer holds {len(pdus)} PDUs")
        event = parse_pdu(room_version, pdus[0])
        if event.event_id != event_id:
            raise FetchError(f"asked for {event_id}, got {event.event_id}")
        return await check_signatures_and_hashes(self.keyring, event)

    # -- auth chains -----------------------------------------------------------------------
    async def fetch_auth_chain(self, origin: str, event: Event) -> None:
        """Store the auth chain of ``event`` as ``origin`` gives it (``/event_auth``)."""
        answer = await self.client.get_json(
            origin, f"{FED_V1}/event_auth/{_q(event.room_id)}/{_q(event.event_id)}"
        )
        pdus = _pdu_list(answer, "auth_chain")
        if len(pdus) > MAX_FETCHED_EVENTS:
            raise FetchError("auth chain is longer than we accept")
        events = await self._check_pdus(event.room_version, event.room_id, pdus)
        have = await self.stores.events.have_seen_events(events)
        await self.persist_outliers(e for e in events.values() if e.event_id not in have)

    async def _check_pdus(
        self, room_version: RoomVersion, room_id: str, pdus: Iterable[Any]
    ) -> dict[str, Event]:
        events: dict[str, Event] = {}
        for pdu in pdus:
            try:
                event = await check_signatures_and_hashes(
                    self.keyring, parse_pdu(room_version, pdu)
                )
            except PduError as e:
                logger.info("Dropping fetched PDU: %s", e)
                continue
            if event.room_id == room_id:
                events[event.event_id] = event
        return events

    # -- storing ----------------------------------------------------------------------------
    async def persist_outliers(self, events: Iterable[Event]) -> None:
        """Auth-check and store events as outliers, auth events first."""
        pending = {e.event_id: e for e in events}
        if not pending:
            return
        ordered = _auth_order(pending)
        needed = {a for e in ordered for a in e.auth_event_ids() if a not in pending}
        known: dict[str, Event] = dict(
            await self.stores.events.get_events(needed, allow_rejected=True)
        )
        items: list[tuple[Event, EventContext]] = []
        for event in ordered:
            auth = {a: known[a] for a in event.auth_event_ids() if a in known}
            reason = check_against_auth_events(event, auth)
            event.internal_metadata.outlier = True
            if reason is not None:
                event.rejected_reason = reason
                logger.info("Rejecting fetched event %s: %s", event.event_id, reason)
            known[event.event_id] = event
            items.append((event, EventContext.for_outlier(reason)))
        by_room: dict[str, list[tuple[Event, EventContext]]] = {}
        for item in items:
            by_room.setdefault(item[0].room_id, []).append(item)
        for room_items in by_room.values():
            await self.sender.send_events(room_items)


def _auth_order(events: Mapping[str, Event]) -> list[Event]:
    """Events ordered so each comes after its auth events among them (then by depth)."""
    ordered: list[Event] = []
    done: set[str] = set()
    remaining = sorted(events.values(), key=lambda e: (e.depth, e.event_id))
    while remaining:
        progress = [
            e for e in remaining if all(a in done or a not in events for a in e.auth_event_ids())
        ]
        if not progress:
            # An auth cycle cannot be valid; keep the rest in depth order.
            progress = remaining
        for event in progress:
            ordered.append(event)
            done.add(event.event_id)
        progress_ids = {e.event_id for e in progress}
        remaining = [e for e in remaining if e.event_id not in progress_ids]
    return ordered


def _id_list(answer: Any, key: str) -> list[str]:
    value = answer.get(key) if isinstance(answer, dict) else None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FetchError(f"answer has no list of event IDs {key!r}")
    return value


def _pdu_list(answer: Any, key: str) -> list[Any]:
    value = answer.get(key) if isinstance(answer, dict) else None
    if not isinstance(value, list):
        raise FetchError(f"answer has no list {key!r}")
    return value
