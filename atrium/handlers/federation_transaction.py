"""Inbound transactions: ``PUT /_matrix/federation/v1/send/{txnId}``.

Server-server API "Transactions": at most 50 PDUs and 100 EDUs; a bigger
transaction is refused as a whole (400 M_TOO_LARGE) before anything in it
is applied. Otherwise every PDU is handled (federation_event.py) and the
answer reports each one: ``{}`` when accepted (or soft-failed, which is
indistinguishable to the sender), ``{"error": ...}`` when dropped or
rejected; a rejected PDU never fails the transaction. EDUs follow the PDUs.

A transaction ID already answered for this origin gets the stored answer
again without being processed twice (the sender retries until it gets a
200). Transactions of one origin are handled one at a time.
"""

from __future__ import annotations

import logging
from typing import Any

from atrium.errors import BadJson, MatrixError
from atrium.federation.pdu import PduError
from atrium.federation.store import FederationStore
from atrium.util.async_helpers import Linearizer
from atrium.util.clock import Clock

logger = logging.getLogger(__name__)

MAX_PDUS_PER_TRANSACTION = 50
MAX_EDUS_PER_TRANSACTION = 100
# How long answers to processed transactions are kept for retries.
RECEIVED_TRANSACTION_RETENTION_MS = 24 * 3600 * 1000


class TransactionTooLarge(MatrixError):
    def __init__(self, msg: str) -> None:
        super().__init__(400, msg, "M_TOO_LARGE")


class TransactionHandler:
    def __init__(
        self,
        *,
        store: FederationStore,
        events: Any,  # FederationEventHandler
        edus: Any,  # FederationEduHandler
        clock: Clock,
    ) -> None:
        self.store = store
        self.events = events
        self.edus = edus
        self.clock = clock
        self._origin_lock = Linearizer("federation_transactions")

    async def on_transaction(
        self, origin: str, txn_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        pdus = body.get("pdus", [])
        edus = body.get("edus", [])
        if not isinstance(pdus, list):
            raise BadJson("'pdus' must be a list")
        if not isinstance(edus, list):
            raise BadJson("'edus' must be a list")
        if len(pdus) > MAX_PDUS_PER_TRANSACTION or len(edus) > MAX_EDUS_PER_TRANSACTION:
            raise TransactionTooLarge(
                f"Transaction has {len(pdus)} PDUs and {len(edus)} EDUs; at most"
                f" {MAX_PDUS_PER_TRANSACTION} PDUs and {MAX_EDUS_PER_TRANSACTION} EDUs are allowed"
            )
        async with self._origin_lock.queue(origin):
            previous = await self.store.get_received_transaction(origin, txn_id)
            if previous is not None:
                return previous[1]
            results: dict[str, Any] = {}
            for pdu in pdus:
                event_id = _pdu_event_id(pdu)
                try:
                    event_id = await self.events.on_receive_pdu(origin, pdu) or event_id
                    result: dict[str, Any] = {}
                except PduError as e:
                    event_id = e.event_id or event_id
                    result = {"error": str(e)}
                except Exception as e:
                    logger.exception("Processing a PDU from %s failed", origin)
                    result = {"error": f"Internal error processing the event: {type(e).__name__}"}
                if event_id is not None:
                    results[event_id] = result
            await self.edus.on_edus(origin, txn_id, edus)
            response = {"pdus": results}
            await self.store.set_received_transaction(
                origin, txn_id, 200, response, self.clock.time_msec()
            )
            return response

    async def prune(self) -> None:
        await self.store.prune_received_transactions(
            self.clock.time_msec() - RECEIVED_TRANSACTION_RETENTION_MS
        )


def _pdu_event_id(pdu: Any) -> str | None:
    """The ID to report a PDU's result under when the room is unknown (v1 format only)."""
    if not isinstance(pdu, dict):
        return None
    event_id = pdu.get("event_id")
    if isinstance(event_id, str):
        return event_id
    return None
