"""ReceiptsStore: the latest read receipt of each user per room, type and
thread, and the receipts stream's id generator.

A receipt never moves backwards: a receipt for an event older (by stream
ordering) than the one the user's receipt already points at is ignored,
so a slow client cannot rewind what others see. Receipts for events this
server has no stream ordering for are accepted as they come.

Sync reads changes straight from the table (``stream_id`` is indexed); no
cache, because the rows wanted depend on the caller's position.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import attrs

from atrium.storage.database import DatabasePool, Transaction
from atrium.storage.id_generators import StreamIdGenerator

# thread_id stored for unthreaded receipts.
UNTHREADED = ""


@attrs.frozen
class Receipt:
    stream_id: int
    room_id: str
    receipt_type: str
    user_id: str
    event_id: str
    # None for an unthreaded receipt.
    thread_id: str | None
    # What clients see for the user: {"ts": ..., "thread_id": ...}.
    data: dict[str, Any]


def _receipt(row: tuple[Any, ...]) -> Receipt:
    return Receipt(int(row[0]), row[1], row[2], row[3], row[4], row[5] or None, json.loads(row[6]))


_COLUMNS = "stream_id, room_id, receipt_type, user_id, event_id, thread_id, data"


class ReceiptsStore:
    def __init__(self, db: DatabasePool, id_gen: StreamIdGenerator) -> None:
        self.db = db
        self.id_gen = id_gen

    @classmethod
    async def create(cls, db: DatabasePool) -> ReceiptsStore:
        return cls(db, await StreamIdGenerator.from_tables(db, [("receipts", "stream_id")]))

    def get_current_token(self) -> int:
        return self.id_gen.get_current_token()

    async def insert_receipt(
        self,
        room_id: str,
        receipt_type: str,
        user_id: str,
        event_id: str,
        thread_id: str | None,
        data: dict[str, Any],
    ) -> Receipt | None:
        """Store a receipt; None (and nothing stored) if it would move backwards."""
        raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        with self.id_gen.get_next() as stream_id:
            stored = await self.db.run_interaction(
                "insert_receipt",
                self._insert_receipt_txn,
                stream_id,
                room_id,
                receipt_type,
                user_id,
                event_id,
                thread_id or UNTHREADED,
                raw,
            )
        if not stored:
            return None
        return Receipt(stream_id, room_id, receipt_type, user_id, event_id, thread_id, data)

    def _insert_receipt_txn(
        self,
        txn: Transaction,
        stream_id: int,
        room_id: str,
        receipt_type: str,
        user_id: str,
        event_id: str,
        thread_id: str,
        raw: str,
    ) -> bool:
        row = txn.select_one(
            "SELECT old.stream_ordering, new.stream_ordering FROM receipts AS r"
            " LEFT JOIN events AS old ON old.event_id = r.event_id"
            " LEFT JOIN events AS new ON new.event_id = ?"
            " WHERE r.room_id = ? AND r.receipt_type = ? AND r.user_id = ? AND r.thread_id = ?",
            (event_id, room_id, receipt_type, user_id, thread_id),
        )
        if row is not None and row[0] is not None and row[1] is not None and row[1] < row[0]:
            return False
        txn.upsert(
            "receipts",
            {
                "room_id": room_id,
                "receipt_type": receipt_type,
                "user_id": user_id,
                "thread_id": thread_id,
            },
            {"event_id": event_id, "stream_id": stream_id, "data": raw},
        )
        return True

    async def get_receipts_for_rooms(
        self, room_ids: Collection[str], from_id: int, to_id: int
    ) -> list[Receipt]:
        """Receipts in ``room_ids`` written in (from_id, to_id], oldest first."""
        if not room_ids:
            return []

        def txn_fn(txn: Transaction) -> list[tuple[Any, ...]]:
            return txn.select_many(
                f"SELECT {_COLUMNS} FROM receipts"
                " WHERE {in} AND stream_id > ? AND stream_id <= ?",
                "room_id",
                room_ids,
                (from_id, to_id),
            )

        rows = await self.db.run_interaction("get_receipts_for_rooms", txn_fn)
        return sorted((_receipt(r) for r in rows), key=lambda r: r.stream_id)

    async def get_receipt(
        self, room_id: str, receipt_type: str, user_id: str, thread_id: str | None = None
    ) -> Receipt | None:
        rows = await self.db.execute(
            "get_receipt",
            f"SELECT {_COLUMNS} FROM receipts WHERE room_id = ? AND receipt_type = ?"
            " AND user_id = ? AND thread_id = ?",
            room_id,
            receipt_type,
            user_id,
            thread_id or UNTHREADED,
        )
        return _receipt(rows[0]) if rows else None

    async def get_all_updated_receipts(self, from_id: int, to_id: int, limit: int) -> list[Receipt]:
        """Every receipt written in (from_id, to_id], oldest first (replication catch-up)."""
        rows = await self.db.execute(
            "get_all_updated_receipts",
            f"SELECT {_COLUMNS} FROM receipts WHERE stream_id > ? AND stream_id <= ?"
            " ORDER BY stream_id LIMIT ?",
            from_id,
            to_id,
            limit,
        )
        return [_receipt(r) for r in rows]
