"""Read receipts and read markers (spec: client-server API "Receipts" and
"Read and unread markers").

A receipt needs the user joined to the room and the event in that room.
``m.fully_read`` is not a receipt: it is the room account data entry
``m.fully_read`` = {"event_id": ...}, set through /read_markers (or the
receipt endpoint with that type) and, like a receipt, never moved to an
older event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from atrium.errors import BadJson, Forbidden, InvalidParam, NotFound
from atrium.events.event import Event
from atrium.handlers.account_data import FULLY_READ, AccountDataHandler
from atrium.handlers.typing import Publish
from atrium.replication.streams.receipts import row_for_receipt
from atrium.storage.stores.events import EventsStore
from atrium.storage.stores.receipts import ReceiptsStore
from atrium.util.clock import Clock

READ = "m.read"
READ_PRIVATE = "m.read.private"
RECEIPT_TYPES = (READ, READ_PRIVATE)


class ReceiptsHandler:
    def __init__(
        self,
        store: ReceiptsStore,
        events: EventsStore,
        is_joined: Callable[[str, str], Awaitable[bool]],
        account_data: AccountDataHandler,
        clock: Clock,
        publish: Publish,
    ) -> None:
        self.store = store
        self.events = events
        self._is_joined = is_joined
        self.account_data = account_data
        self.clock = clock
        self._publish = publish

    async def client_receipt(
        self, user_id: str, room_id: str, receipt_type: str, event_id: str, body: dict[str, Any]
    ) -> None:
        """POST /rooms/{roomId}/receipt/{receiptType}/{eventId}."""
        if receipt_type not in (*RECEIPT_TYPES, FULLY_READ):
            raise InvalidParam(
                f"Receipt type must be one of {', '.join((*RECEIPT_TYPES, FULLY_READ))}"
            )
        thread_id = body.get("thread_id")
        if thread_id is not None:
            # Spec: a 400 when thread_id is not a non-empty string or does not
            # go with the receipt type.
            if not isinstance(thread_id, str) or not thread_id:
                raise InvalidParam("thread_id field must be a non-empty string")
            # "main" or the thread root's event ID (255 bytes at most, "Size limits").
            if thread_id != "main" and (
                not thread_id.startswith("$") or len(thread_id.encode("utf-8")) > 255
            ):
                raise InvalidParam("thread_id must be 'main' or an event ID")
            if receipt_type == FULLY_READ:
                raise InvalidParam("thread_id is not allowed for m.fully_read")
        await self._check_joined(user_id, room_id)
        if receipt_type == FULLY_READ:
            await self._set_fully_read(user_id, room_id, event_id)
        else:
            await self._send_receipt(user_id, room_id, receipt_type, event_id, thread_id)

    async def client_read_markers(self, user_id: str, room_id: str, body: dict[str, Any]) -> None:
        """POST /rooms/{roomId}/read_markers: the fully read marker and/or receipts."""
        wanted: dict[str, str] = {}
        for key in (FULLY_READ, READ, READ_PRIVATE):
            value = body.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not value.startswith("$"):
                raise BadJson(f"{key!r} must be an event ID")
            wanted[key] = value
        await self._check_joined(user_id, room_id)
        # Check every event before changing anything, so a bad request changes nothing.
        for event_id in set(wanted.values()):
            await self._event_in_room(event_id, room_id)
        if FULLY_READ in wanted:
            await self._set_fully_read(user_id, room_id, wanted[FULLY_READ])
        for receipt_type in RECEIPT_TYPES:
            if receipt_type in wanted:
                await self._send_receipt(user_id, room_id, receipt_type, wanted[receipt_type], None)

    # -- internals ---------------------------------------------------------------------
    async def _check_joined(self, user_id: str, room_id: str) -> None:
        if not await self._is_joined(user_id, room_id):
            raise Forbidden("You are not joined to this room")

    async def _event_in_room(self, event_id: str, room_id: str) -> Event:
        event = await self.events.get_event(event_id, allow_none=True)
        if event is None or event.room_id != room_id:
            raise NotFound("Event not found in this room")
        return event

    async def _send_receipt(
        self, user_id: str, room_id: str, receipt_type: str, event_id: str, thread_id: str | None
    ) -> None:
        await self._event_in_room(event_id, room_id)
        data: dict[str, Any] = {"ts": self.clock.time_msec()}
        if thread_id is not None:
            data["thread_id"] = thread_id
        receipt = await self.store.insert_receipt(
            room_id, receipt_type, user_id, event_id, thread_id, data
        )
        if receipt is None:
            # Older than the receipt the user already has: nothing changes.
            return
        await self._publish("receipts", self.store.get_current_token(), [row_for_receipt(receipt)])

    async def _set_fully_read(self, user_id: str, room_id: str, event_id: str) -> None:
        event = await self._event_in_room(event_id, room_id)
        current = await self.account_data.store.get_account_data_by_type(
            user_id, room_id, FULLY_READ
        )
        old_id = (current or {}).get("event_id")
        if old_id == event_id:
            return
        if isinstance(old_id, str):
            old = await self.events.get_event(old_id, allow_none=True)
            old_pos = old.internal_metadata.stream_ordering if old is not None else None
            new_pos = event.internal_metadata.stream_ordering
            if old_pos is not None and new_pos is not None and new_pos < old_pos:
                # The marker only moves forward (a stale client cannot rewind it).
                return
        await self.account_data.add_account_data(
            user_id, room_id, FULLY_READ, {"event_id": event_id}
        )
