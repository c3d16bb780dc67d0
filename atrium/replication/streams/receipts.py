"""The receipts stream: one row per stored receipt, in stream_id order.

Public receipts wake everyone syncing the room; a private receipt
(m.read.private) only its owner, who alone may see it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from atrium.replication.streams import register_stream
from atrium.replication.streams._base import Effects, Stream, StreamRow, StreamUpdates

PRIVATE_RECEIPT_TYPES = frozenset({"m.read.private"})


@attrs.frozen
class ReceiptsStreamRow(StreamRow):
    room_id: str
    receipt_type: str
    user_id: str
    event_id: str
    thread_id: str | None
    data: dict[str, Any]


def row_for_receipt(receipt: Any) -> ReceiptsStreamRow:
    return ReceiptsStreamRow(
        receipt.room_id,
        receipt.receipt_type,
        receipt.user_id,
        receipt.event_id,
        receipt.thread_id,
        receipt.data,
    )


@register_stream
class ReceiptsStream(Stream):
    NAME = "receipts"
    ROW_TYPE = ReceiptsStreamRow
    TOKEN_KEY = "receipts"

    def current_token(self, instance_name: str) -> int:
        return self.hs.receipts_store.get_current_token()

    async def get_updates(
        self, instance_name: str, from_token: int, to_token: int, limit: int
    ) -> StreamUpdates:
        receipts = await self.hs.receipts_store.get_all_updated_receipts(
            from_token, to_token, limit
        )
        rows: list[tuple[int, StreamRow]] = [(r.stream_id, row_for_receipt(r)) for r in receipts]
        limited = len(rows) == limit
        return StreamUpdates(rows, rows[-1][0] if limited else to_token, limited)

    async def effects(self, rows: Iterable[StreamRow]) -> Effects:
        effects = Effects()
        for row in rows:
            assert isinstance(row, ReceiptsStreamRow)
            effects.users.add(row.user_id)
            if row.receipt_type not in PRIVATE_RECEIPT_TYPES:
                effects.rooms.add(row.room_id)
        return effects
