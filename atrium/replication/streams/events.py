"""The events stream: one row per persisted event, in stream_ordering order.

Rows carry what other processes need without loading the event: which room
(to wake its listeners), and for membership events the user (to wake them
and drop their cached room list). Current-state caches are invalidated by the
rows of the caches stream that the writer publishes in the same persist.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from atrium.replication.streams import register_stream
from atrium.replication.streams._base import Effects, Stream, StreamRow, StreamUpdates


@attrs.frozen
class EventsStreamRow(StreamRow):
    event_id: str
    room_id: str
    type: str
    state_key: str | None
    sender: str
    membership: str | None
    redacts: str | None
    outlier: bool


def row_for_event(event: Any) -> EventsStreamRow:
    return EventsStreamRow(
        event.event_id,
        event.room_id,
        event.type,
        event.state_key,
        event.sender,
        event.membership if event.type == "m.room.member" else None,
        event.redacts if event.type == "m.room.redaction" else None,
        bool(event.internal_metadata.outlier),
    )


@register_stream
class EventsStream(Stream):
    NAME = "events"
    ROW_TYPE = EventsStreamRow
    TOKEN_KEY = "events"

    def current_token(self, instance_name: str) -> int:
        return self.hs.stores.events.get_current_events_token()

    async def get_updates(
        self, instance_name: str, from_token: int, to_token: int, limit: int
    ) -> StreamUpdates:
        db = self.hs.db
        rows = await db.execute(
            "events_stream_updates",
            "SELECT e.stream_ordering, e.event_id, e.room_id, e.type, e.state_key, e.sender,"
            " m.membership, e.redacts, e.outlier"
            " FROM events AS e LEFT JOIN room_memberships AS m ON m.event_id = e.event_id"
            " WHERE e.instance_name = ? AND e.stream_ordering > ? AND e.stream_ordering <= ?"
            " ORDER BY e.stream_ordering LIMIT ?",
            instance_name,
            from_token,
            to_token,
            limit,
        )
        updates: list[tuple[int, StreamRow]] = [
            (int(r[0]), EventsStreamRow(r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8])))
            for r in rows
        ]
        limited = len(updates) == limit
        upto = updates[-1][0] if limited else to_token
        return StreamUpdates(updates, upto, limited)

    async def stored_positions(self) -> dict[str, int] | None:
        # A writer persists one batch at a time and records its position in
        # the same transaction, so no event of it below this is unfinished.
        rows = await self.hs.db.execute(
            "events_stream_positions",
            "SELECT instance_name, stream_id FROM stream_positions WHERE stream_name = ?",
            "events",
        )
        return {r[0]: int(r[1]) for r in rows}

    async def effects(self, rows: Iterable[StreamRow]) -> Effects:
        effects = Effects()
        latest_rooms: list[tuple[Any, ...]] = []
        member_users: list[tuple[Any, ...]] = []
        for row in rows:
            assert isinstance(row, EventsStreamRow)
            if row.outlier:
                # Outliers are not in the timeline; only an invite or knock
                # to one of our users wakes that user.
                if row.membership is not None and row.state_key:
                    effects.users.add(row.state_key)
                continue
            effects.rooms.add(row.room_id)
            latest_rooms.append((row.room_id,))
            if row.membership is not None and row.state_key:
                effects.users.add(row.state_key)
                member_users.append((row.state_key,))
        if latest_rooms:
            effects.invalidations.append(("get_latest_event_ids_in_room", latest_rooms))
        if member_users:
            effects.invalidations.append(("get_rooms_for_user_with_stream_ordering", member_users))
        return effects
