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
does not hammer a dead server. Pending items stay queued (in memory up to
``MAX_PENDING`` each: a long-dead server loses the oldest PDUs, which it
can later fetch with /get_missing_events). A 4xx other than 429 means the
destination refuses this transaction for good: its contents are dropped.
``wake`` (a request from that server, or REMOTE_SERVER_UP) ends the back-off.
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

    # -- queueing -------------------------------------------------------------------------
    def send_pdu(self, event: Event) -> None:
        if len(self.pending_pdus) >= MAX_PENDING:
            dropped = self.pending_pdus.popleft()
            logger.warning("Queue for %s full: dropping PDU %s", self.destination, dropped.event_id)
        self.pending_pdus.append(event)
        self.attempt()

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
                if not await self._send_one_transaction():
                    return
        finally:
            self._transmitting = False

    async def _send_one_transaction(self) -> bool:
        """Send what is pending; False when there was nothing or it failed."""
        pdus = list(self.pending_pdus)[:MAX_PDUS]
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
                await self._done(len(pdus), len(edus), outbox, pokes)
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
        await self._done(len(pdus), len(edus), outbox, pokes)
        self.transactions_sent += 1
        if self._retry_interval > 0:
            self._retry_interval = 0
            await self._save_retry()
        return True

    async def _done(
        self, n_pdus: int, n_edus: int, outbox: list[Any], pokes: list[DevicePoke]
    ) -> None:
        for _ in range(n_pdus):
            self.pending_pdus.popleft()
        for _ in range(n_edus):
            self.pending_edus.popleft()
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
