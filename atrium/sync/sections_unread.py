"""``unread_notifications`` of every joined room in a /sync response (spec
client-server "Receiving notifications": notification_count and
highlight_count since the user's latest read receipt).

Runs after every section that may add a joined room's entry (rooms,
account data, receipts): a new receipt brings its room into the response
through the ephemeral section, and the counts written here are then 0.
One statement per response, for all its joined rooms.
"""

from __future__ import annotations

from typing import Any

from atrium.storage.stores.event_push_actions import EventPushActionsStore
from atrium.sync.sections import SyncRequest


class UnreadCountsSection:
    def __init__(self, store: EventPushActionsStore) -> None:
        self.store = store

    async def fill(self, request: SyncRequest, response: dict[str, Any]) -> None:
        joined = response.get("rooms", {}).get("join")
        if not joined:
            return
        counts = await self.store.get_unread_counts(request.user_id, list(joined))
        for room_id, entry in joined.items():
            found = counts.get(room_id)
            entry["unread_notifications"] = {
                "notification_count": found.notifications if found else 0,
                "highlight_count": found.highlights if found else 0,
            }
