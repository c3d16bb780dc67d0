"""GET /notifications (spec client-server "Listing Notifications"): the
events that notified the user, newest first, from the stored push actions.

``from`` is the ``next_token`` of the previous page (a stream ordering);
``read`` says whether the user's latest read receipt in the room is at or
after the event.
"""

from __future__ import annotations

from typing import Any

from atrium.errors import InvalidParam
from atrium.events.serialize import serialize_event
from atrium.storage.stores.event_push_actions import EventPushActionsStore
from atrium.storage.stores.events import EventsStore
from atrium.util.clock import Clock

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class NotificationsHandler:
    def __init__(self, store: EventPushActionsStore, events: EventsStore, clock: Clock) -> None:
        self.store = store
        self.events = events
        self.clock = clock

    async def get_notifications(
        self, user_id: str, from_token: str | None, limit: int, only: str | None
    ) -> dict[str, Any]:
        before = None
        if from_token is not None:
            try:
                before = int(from_token)
            except ValueError:
                raise InvalidParam("'from' must be a next_token from this endpoint") from None
        rows = await self.store.get_notifications(
            user_id, before, min(max(limit, 1), MAX_LIMIT), only == "highlight"
        )
        events = await self.events.get_events([r.event_id for r in rows])
        now_ms = self.clock.time_msec()
        notifications = []
        for row in rows:
            event = events.get(row.event_id)
            if event is None:
                continue
            notifications.append(
                {
                    "actions": row.actions,
                    "event": serialize_event(event, now_ms, requester_user_id=user_id),
                    "read": row.read,
                    "room_id": row.room_id,
                    "ts": event.origin_server_ts,
                }
            )
        out: dict[str, Any] = {"notifications": notifications}
        if rows and len(rows) >= min(max(limit, 1), MAX_LIMIT):
            out["next_token"] = str(rows[-1].stream_ordering)
        return out
