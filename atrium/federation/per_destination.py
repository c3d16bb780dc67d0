"""The outbound queue of one destination server.

PDUs and EDUs for a destination wait here and go out in transactions
(``PUT /_matrix/federation/v1/send/{txnId}``) of at most 50 PDUs and 100 EDUs
(server-server API "Transactions"), one transaction in flight at a time: the
spec has the sender wait for a 200 before sending another. Remote to-device
messages and device-list updates are not held in memory: they are read
from their tables (``device_federation_outbox``, ``device_lists_outbound_pokes``)
when a transaction has room for them, and removed / marked sent once it
succeeded.

When a transaction fails (no answer, a 5xx, 429...) the destination backs
off: no attempt until ``retry_interval`` has passed, the interval doubling
from ``min_retry_ms`` up to ``max_retry_ms``; the state is stored so a restart
does not hammer a dead server. A 4xx other than 429 means the destination
refuses this transaction for good: its contents are dropped. ``wake`` (a
request from that server, or REMOTE_SERVER_UP) ends the back-off.

PDUs are also written down per room (``federation_destination_rooms``: the
latest queued and the latest accepted), so the in-memory queue is only a
fast path. After a failed transaction, when the queue would pass
``MAX_PENDING`` PDUs, and when the sender starts with the destination
behind, the queue drops its PDUs and *catches up* from the database
instead: for each room the destination is behind in, oldest first, it sends
the events it missed (when there are at most ``MAX_PDUS`` and the
destination's membership did not change meanwhile), else only the latest
one, whose missing prev_events the destination fetches with
``/get_missing_events`` (server-server API "Retrieving events"). New PDUs
are not held while catching up: the database already has them. EDUs stay
in memory (at most ``MAX_PENDING``; the oldest are dropped beyond).
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from twisted.internet import defer

from atrium.events.event import Event
from atrium.federation.client import HttpResponseError
from atrium.federation.store import DevicePoke

if TYPE_CHECKING:
    from atrium.federation.sender import FederationSender

logger = logging.getLogger(__name__)

MAX_PDUS = 50
MAX_EDUS = 100
MAX_PENDING = 1000
# Rooms looked at per catch-up round.
CATCH_UP_ROOMS = 50
SEND_TIMEOUT = 60.0


class PerDestinationQueue:
    def __init__(self, sender: FederationSender, destination: str) -> None:
        self.sender = sender
        self.destination = destination
        self.pending_pdus: collections.deque[Event] = collections.deque()
        self.pending_edus: collections.deque[dict[str, Any]] = collections.deque()
        # Whether the outbox tables may hold something for this destination.
        self._check_outbox = True
        self._check_pokes = True
        self._transmitting = False
        self._retry_last_ts = 0
        self._retry_interval = 0
        self._retry_loaded = False
        self._retry_timer: Any = None
        self.transactions_sent = 0
        # Catch-up mode (module doc): PDUs come from the database, not memory.
        self.catching_up = False
        # A PDU was queued since the last catch-up read: read again before leaving.
        self._catch_up_dirty = False

    # -- queueing -------------------------------------------------------------------------
    def send_pdu(self, event: Event) -> None:
        if self.catching_up:
            # Already in federation_destination_rooms: catch-up will read it.
            self._catch_up_dirty = True
        elif len(self.pending_pdus) >= MAX_PENDING:
            logger.warning(
                "Queue for %s full (%d PDUs): catching up from the database instead",
                self.destination,
                len(self.pending_pdus),
            )
            self._enter_catch_up()
        else:
            self.pending_pdus.append(event)
        self.attempt()

    def start_catch_up(self) -> None:
        """Send what the database says this destination missed (module doc)."""
        self._enter_catch_up()
        self.attempt()

    def _enter_catch_up(self) -> None:
        self.catching_up = True
        self._catch_up_dirty = True
        self.pending_pdus.clear()

    def send_edu(self, edu_type: str, content: dict[str, Any]) -> None:
        if len(self.pending_edus) >= MAX_PENDING:
            self.pending_edus.popleft()
        self.pending_edus.append({"edu_type": edu_type, "content": content})
        self.attempt()

    def outbox_changed(self) -> None:
        self._check_outbox = True
        self.attempt()

    def pokes_changed(self) -> None:
        self._check_pokes = True
        self.attempt()

    @property
    def backing_off(self) -> bool:
        return self._retry_interval > 0

    def wake(self) -> None:
        """The destination is reachable again: end the back-off and send now."""
        if self._retry_interval > 0:
            self._retry_interval = 0
            defer.ensureDeferred(self._save_retry())
        self._cancel_timer()
        self.attempt()

    # -- sending ------------------------------------------------------------------------------
    def attempt(self) -> None:
        if self._transmitting or self.sender.stopped:
            return
        self._transmitting = True
        d = defer.ensureDeferred(self._run())
        d.addErrback(lambda f: logger.error("Queue for %s failed: %s", self.destination, f))

    async def _run(self) -> None:
        try:
            if not self._retry_loaded:
                stored = await self.sender.store.get_destination_retry(self.destination)
                if stored is not None:
                    self._retry_last_ts, self._retry_interval = stored
                self._retry_loaded = True
            while not self.sender.stopped:
                wait_ms = self._retry_last_ts + self._retry_interval - self.sender.clock.time_msec()
                if self._retry_interval > 0 and wait_ms > 0:
                    self._schedule_retry(wait_ms)
                    return
                if self.catching_up:
                    caught_up = await self._catch_up_round()
                    if caught_up is False:
                        return
                    if caught_up is None:
                        if self._catch_up_dirty:
                            continue
                        self.catching_up = False
                        logger.info("%s has caught up", self.destination)
                    continue
                if not await self._send_one_transaction():
                    return
        finally:
            self._transmitting = False

    async def _catch_up_round(self) -> bool | None:
        """One transaction of missed PDUs: None when nothing is behind any more,
        else whether it succeeded."""
        self._catch_up_dirty = False
        sender = self.sender
        store = sender.store
        pdus: list[Event] = []
        covered: dict[str, int] = {}
        for room in await store.get_rooms_behind(self.destination, CATCH_UP_ROOMS):
            event_ids = None
            if room.sent is not None:
                event_ids = await store.get_missed_event_ids(
                    room.room_id, self.destination, room.sent, room.queued, MAX_PDUS
                )
            if event_ids is None:
                # Too many (or nothing sent yet): the latest; the destination
                # fetches the gap with /get_missing_events.
                latest = await store.get_event_id_at(room.room_id, room.queued)
                event_ids = [latest] if latest is not None else []
            events = [
                e
                for e in await sender.hs.stores.events.get_events_as_list(event_ids)
                if sender.should_send(e, self.destination)
            ]
            if pdus and len(pdus) + len(events) > MAX_PDUS:
                break
            events.sort(key=lambda e: e.internal_metadata.stream_ordering or 0)
            pdus.extend(events)
            covered[room.room_id] = room.queued
        if not covered:
            return None
        if not pdus:
            await store.mark_rooms_sent(self.destination, covered)
            return True
        return await self._send_one_transaction(catch_up=(pdus, covered))

    async def _send_one_transaction(
        self, catch_up: tuple[list[Event], dict[str, int]] | None = None
    ) -> bool:
        """Send what is pending (or ``catch_up``: PDUs read from the database and
        the rooms they bring up to date); False when there was nothing or it failed."""
        if catch_up is not None:
            pdus, rooms_sent = catch_up
            n_memory_pdus = 0
        else:
            pdus = list(self.pending_pdus)[:MAX_PDUS]
            n_memory_pdus = len(pdus)
            rooms_sent = {}
            for event in pdus:
                ordering = event.internal_metadata.stream_ordering
                if ordering is not None and ordering > rooms_sent.get(event.room_id, 0):
                    rooms_sent[event.room_id] = ordering
        edus = list(self.pending_edus)[:MAX_EDUS]
        outbox: list[Any] = []
        pokes: list[DevicePoke] = []
        store = self.sender.store
        if self._check_outbox and len(edus) < MAX_EDUS:
            outbox = await store.get_outbox_messages(self.destination, MAX_EDUS - len(edus))
            if not outbox:
                self._check_outbox = False
        poke_edus: list[dict[str, Any]] = []
        if self._check_pokes and len(edus) + len(outbox) < MAX_EDUS:
            pokes = await store.get_pending_pokes(
                self.destination, MAX_EDUS - len(edus) - len(outbox)
            )
            if not pokes:
                self._check_pokes = False
            poke_edus = await self.sender.device_list_edus(self.destination, pokes)
        all_edus = (
            edus
            + [
                {
                    "edu_type": "m.direct_to_device",
                    "content": {
                        "sender": m.sender,
                        "type": m.message_type,
                        "message_id": f"{m.stream_id}",
                        "messages": m.messages,
                    },
                }
                for m in outbox
            ]
            + poke_edus
        )
        if not pdus and not all_edus:
            return False
        txn_id = self.sender.next_transaction_id()
        body = {
            "origin": self.sender.server_name,
            "origin_server_ts": self.sender.clock.time_msec(),
            "pdus": [e.get_pdu_json() for e in pdus],
            "edus": all_edus,
        }
        try:
            answer = await self.sender.client.put_json(
                self.destination,
                f"/_matrix/federation/v1/send/{quote(txn_id, safe='')}",
                body,
                timeout=SEND_TIMEOUT,
            )
        except HttpResponseError as e:
            if 400 <= e.code < 500 and e.code != 429:
                logger.warning(
                    "%s refused transaction %s (%s): dropping its contents",
                    self.destination,
                    txn_id,
                    e,
                )
                await self._done(n_memory_pdus, rooms_sent, len(edus), outbox, pokes)
                return True
            await self._failed(e)
            return False
        except Exception as e:
            await self._failed(e)
            return False
        if isinstance(answer, dict) and isinstance(answer.get("pdus"), dict):
            for event_id, result in answer["pdus"].items():
                if isinstance(result, dict) and "error" in result:
                    logger.info(
                        "%s refused %s: %.200s", self.destination, event_id, result["error"]
                    )
        await self._done(n_memory_pdus, rooms_sent, len(edus), outbox, pokes)
        self.transactions_sent += 1
        if self._retry_interval > 0:
            self._retry_interval = 0
            await self._save_retry()
        return True

    async def _done(
        self,
        n_pdus: int,
        rooms_sent: dict[str, int],
        n_edus: int,
        outbox: list[Any],
        pokes: list[DevicePoke],
    ) -> None:
        # The queue may have been emptied meanwhile (it overflowed into catch-up).
        for _ in range(min(n_pdus, len(self.pending_pdus))):
            self.pending_pdus.popleft()
        for _ in range(min(n_edus, len(self.pending_edus))):
            self.pending_edus.popleft()
        if rooms_sent:
            await self.sender.store.mark_rooms_sent(self.destination, rooms_sent)
        if outbox:
            await self.sender.store.delete_outbox_messages(
                self.destination, max(m.stream_id for m in outbox)
            )
        if pokes:
            await self.sender.store.mark_pokes_sent(self.destination, pokes)

    async def _failed(self, error: Exception) -> None:
        sender = self.sender
        self._retry_interval = (
            sender.min_retry_ms
            if self._retry_interval <= 0
            else min(self._retry_interval * 2, sender.max_retry_ms)
        )
        self._retry_last_ts = sender.clock.time_msec()
        # What it missed is in the database: catch up from there once it is back.
        self._enter_catch_up()
        logger.info(
            "Sending to %s failed (%s); next attempt in %d s",
            self.destination,
            error,
            self._retry_interval // 1000,
        )
        await self._save_retry()
        self._schedule_retry(self._retry_interval)

    async def _save_retry(self) -> None:
        try:
            await self.sender.store.set_destination_retry(
                self.destination, self._retry_last_ts, self._retry_interval
            )
        except Exception:
            logger.exception("Saving the back-off of %s failed", self.destination)

    def _schedule_retry(self, delay_ms: int) -> None:
        self._cancel_timer()
        self._retry_timer = self.sender.clock.call_later(delay_ms / 1000.0, self.attempt)

    def _cancel_timer(self) -> None:
        if self._retry_timer is not None:
            self.sender.clock.cancel_call_later(self._retry_timer)
            self._retry_timer = None

    def stop(self) -> None:
        self._cancel_timer()
