"""/sync sections for room ephemeral events: typing (m.typing) and
receipts (m.receipt), in ``rooms.join.<room>.ephemeral``.

Both add nothing when nothing changed in the joined rooms since the client's
position, so an empty incremental sync can keep waiting. Rooms the user
newly joined get the current typing set and all receipts, as on an initial
sync. Private receipts (m.read.private) go only to their owner (spec
"Private read receipts").
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from atrium.handlers.typing import TypingHandler, typing_event
from atrium.replication.streams.receipts import PRIVATE_RECEIPT_TYPES
from atrium.storage.stores.receipts import Receipt, ReceiptsStore
from atrium.sync.sections import SyncRequest, joined_room_entry


async def apply_filter(sync_filter: Any, method: str, events: list[Any]) -> list[Any]:
    """Run ``sync_filter.<method>(events)`` if the filter has it (sync or async).

    The filter object belongs to the sync handler; sections only know the
    method names (filter_room_ephemeral, filter_room_account_data,
    filter_account_data, filter_presence). No filter: no filtering.
    """
    fn = getattr(sync_filter, method, None)
    if fn is None or not events:
        return events
    result = fn(events)
    if inspect.isawaitable(result):
        result = await result
    return list(result)


async def add_room_events(
    request: SyncRequest,
    response: dict[str, Any],
    room_id: str,
    section: str,
    filter_method: str,
    events: list[dict[str, Any]],
) -> None:
    """Append events to a joined room's ``section`` (creating the entry only if any pass)."""
    events = await apply_filter(request.filter, filter_method, events)
    if events:
        joined_room_entry(response, room_id)[section]["events"].extend(events)


def _full_rooms(request: SyncRequest) -> tuple[frozenset[str], frozenset[str]]:
    """(rooms to send in full, rooms to send changes of)."""
    joined = request.joined_room_ids
    if request.is_initial or request.full_state:
        return joined, frozenset()
    full = joined & request.newly_joined_room_ids
    return full, joined - full


class TypingSection:
    """m.typing for joined rooms whose typing set changed since ``since``."""

    def __init__(self, typing: TypingHandler) -> None:
        self.typing = typing

    async def fill(self, request: SyncRequest, response: dict[str, Any]) -> None:
        full, incremental = _full_rooms(request)
        changed: dict[str, list[str]] = {}
        for room_id in full:
            users = self.typing.typing_users(room_id)
            if users:
                changed[room_id] = users
        if incremental:
            changed.update(
                self.typing.rooms_changed_since(incremental, request.since_key("typing"))
            )
        for room_id in sorted(changed):
            await add_room_events(
                request,
                response,
                room_id,
                "ephemeral",
                "filter_room_ephemeral",
                [typing_event(changed[room_id])],
            )


def receipt_events(receipts: Iterable[Receipt], user_id: str) -> dict[str, dict[str, Any]]:
    """room_id -> one m.receipt event batching the room's receipts (spec: m.receipt)."""
    contents: dict[str, dict[str, Any]] = {}
    for receipt in receipts:
        if receipt.receipt_type in PRIVATE_RECEIPT_TYPES and receipt.user_id != user_id:
            continue
        content = contents.setdefault(receipt.room_id, {})
        by_type = content.setdefault(receipt.event_id, {}).setdefault(receipt.receipt_type, {})
        by_type[receipt.user_id] = dict(receipt.data)
    return {
        room_id: {"type": "m.receipt", "content": content} for room_id, content in contents.items()
    }


class ReceiptsSection:
    """m.receipt for joined rooms with receipts written since ``since``."""

    def __init__(self, store: ReceiptsStore) -> None:
        self.store = store

    async def fill(self, request: SyncRequest, response: dict[str, Any]) -> None:
        full, incremental = _full_rooms(request)
        to_id = request.now.receipts
        receipts: list[Receipt] = []
        if full:
            receipts += await self.store.get_receipts_for_rooms(full, 0, to_id)
        since = request.since_key("receipts")
        if incremental and since < to_id:
            receipts += await self.store.get_receipts_for_rooms(incremental, since, to_id)
        events = receipt_events(receipts, request.user_id)
        for room_id in sorted(events):
            await add_room_events(
                request, response, room_id, "ephemeral", "filter_room_ephemeral", [events[room_id]]
            )
