"""Backfilling: fetching a room's older history from another server.

A server that joined a room late holds only the events since its join (and
the state at the join, as outliers). When a local user paginates backwards
(/messages) past the oldest event we hold, and the room has backward
extremities (prev_events we reference but do not hold), we ask a server in
the room for the history behind them (server-server API "Backfilling and
retrieving missing events", ``GET /_matrix/federation/v1/backfill``).

Each returned event gets the checks of any received PDU (format,
signatures, hashes: federation/pdu.py; auth against its auth events and
against the state before it), oldest first. The state before an event whose
prev_events we do not hold is asked of the same server (``/state_ids``).
Accepted events are persisted *backfilled*: negative stream orderings,
topological ordering = depth, so they sort before everything we had;
they never change the room's current state or forward extremities and are
not news for /sync (no soft-fail check either: that is about the present).

Events we already hold are skipped, including those held as outliers
(state we got at the join): they stay outliers and are not shown in
/messages. A fruitless attempt (nothing new) is not repeated for the same
room and extremities within ``RETRY_INTERVAL_MS``.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from atrium.events.event import Event
from atrium.federation.pdu import PduError, check_signatures_and_hashes, parse_pdu
from atrium.storage.stores import Stores
from atrium.util.async_helpers import Linearizer

logger = logging.getLogger(__name__)

FED_V1 = "/_matrix/federation/v1"
# Events asked for per backfill request, and backward extremities named in it.
MIN_BACKFILL = 20
MAX_BACKFILL = 100
MAX_EXTREMITIES = 20
# Servers tried per attempt, in order of joined members.
MAX_SERVERS = 3
RETRY_INTERVAL_MS = 60_000
BACKFILL_TIMEOUT = 30.0


class BackfillHandler:
    def __init__(
        self,
        *,
        stores: Stores,
        events: Any,  # FederationEventHandler
        client: Any,  # FederationHttpClient
        clock: Any,
        server_name: str,
    ) -> None:
        self.stores = stores
        self.events = events
        self.client = client
        self.clock = clock
        self.server_name = server_name
        self._lock = Linearizer("backfill")
        # room_id -> (extremities, when) of the last attempt that found nothing.
        self._fruitless: dict[str, tuple[frozenset[str], int]] = {}

    async def has_backward_extremities(self, room_id: str) -> bool:
        return bool(await self.stores.events.get_backward_extremities(room_id))

    async def maybe_backfill(self, room_id: str, limit: int) -> bool:
        """Fetch history behind the room's backward extremities; True if any was stored."""
        async with self._lock.queue(room_id):
            extremities = frozenset(await self.stores.events.get_backward_extremities(room_id))
            if not extremities:
                return False
            last = self._fruitless.get(room_id)
            now = self.clock.time_msec()
            if last is not None and last[0] == extremities and now - last[1] < RETRY_INTERVAL_MS:
                return False
            want = min(max(limit * 2, MIN_BACKFILL), MAX_BACKFILL)
            for server in await self._servers_to_ask(room_id):
                try:
                    stored = await self.backfill_from(server, room_id, extremities, want)
                except Exception as e:
                    logger.info("Backfill of %s from %s failed: %s", room_id, server, e)
                    continue
                if stored:
                    self._fruitless.pop(room_id, None)
                    return True
            self._fruitless[room_id] = (extremities, now)
            return False

    async def _servers_to_ask(self, room_id: str) -> list[str]:
        """Other servers with joined members, most members first."""
        counts: dict[str, int] = {}
        for user_id in await self.stores.members.get_users_in_room(room_id):
            server = user_id.split(":", 1)[1]
            if server != self.server_name:
                counts[server] = counts.get(server, 0) + 1
        return sorted(counts, key=lambda s: (-counts[s], s))[:MAX_SERVERS]

    async def backfill_from(
        self, origin: str, room_id: str, extremities: frozenset[str], limit: int
    ) -> int:
        """One /backfill request to ``origin``; returns how many new events were stored."""
        room_version = await self.stores.rooms.get_room_version(room_id)
        answer = await self.client.get_json(
            origin,
            f"{FED_V1}/backfill/{quote(room_id, safe='')}",
            args={"v": sorted(extremities)[:MAX_EXTREMITIES], "limit": limit},
            timeout=BACKFILL_TIMEOUT,
        )
        pdus = answer.get("pdus") if isinstance(answer, dict) else None
        if not isinstance(pdus, list):
            raise PduError("backfill answer has no list of PDUs")
        received: dict[str, Event] = {}
        for pdu in pdus[:limit]:
            try:
                event = await check_signatures_and_hashes(
                    self.events.keyring, parse_pdu(room_version, pdu)
                )
            except PduError as e:
                logger.info("Dropping a backfilled PDU from %s: %s", origin, e)
                continue
            if event.room_id == room_id:
                received[event.event_id] = event
        seen = await self.stores.events.have_seen_events(received)
        new = sorted(
            (e for e in received.values() if e.event_id not in seen),
            key=lambda e: (e.depth, e.event_id),
        )
        stored = 0
        for event in new:
            try:
                await self._persist(origin, event)
            except Exception as e:
                logger.info("Could not backfill %s from %s: %s", event.event_id, origin, e)
                continue
            if event.rejected_reason is None:
                stored += 1
        return stored

    async def _persist(self, origin: str, event: Event) -> None:
        """Checks 4-5 and persist as backfilled; the state before an event
        whose prev_events we lack comes from ``origin``."""
        prevs = event.prev_event_ids()
        groups = await self.stores.state.get_state_groups_for_events(prevs)
        state_before = None
        if any(p not in groups for p in prevs):
            state_before = await self.events.fetcher.fetch_state_before(
                origin, event.room_version, event.room_id, event.event_id
            )
        await self.events.process_event(
            origin, event, state_before, check_soft_fail=False, backfilled=True
        )
