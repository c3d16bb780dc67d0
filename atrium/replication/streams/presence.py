"""The presence stream: one row per presence change of a local user.

Applying a row drops the user's cached presence and wakes /sync requests
of everyone sharing a room with them (and the user).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from atrium.replication.streams import register_stream
from atrium.replication.streams._base import Effects, Stream, StreamRow, StreamUpdates


@attrs.frozen
class PresenceStreamRow(StreamRow):
    user_id: str
    state: str
    status_msg: str | None
    last_active_ts: int


def row_for_presence(presence: Any) -> PresenceStreamRow:
    return PresenceStreamRow(
        presence.user_id, presence.state, presence.status_msg, presence.last_active_ts
    )


@register_stream
class PresenceStream(Stream):
    NAME = "presence"
    ROW_TYPE = PresenceStreamRow
    TOKEN_KEY = "presence"

    def current_token(self, instance_name: str) -> int:
        return self.hs.presence_store.get_current_token()

    async def get_updates(
        self, instance_name: str, from_token: int, to_token: int, limit: int
    ) -> StreamUpdates:
        updates = await self.hs.presence_store.get_all_presence_updates(from_token, to_token, limit)
        rows: list[tuple[int, StreamRow]] = [(p.stream_id, row_for_presence(p)) for p in updates]
        limited = len(rows) == limit
        return StreamUpdates(rows, rows[-1][0] if limited else to_token, limited)

    async def effects(self, rows: Iterable[StreamRow]) -> Effects:
        effects = Effects()
        users: list[tuple[Any, ...]] = []
        for row in rows:
            assert isinstance(row, PresenceStreamRow)
            effects.users.add(row.user_id)
            users.append((row.user_id,))
            effects.rooms.update(await self.hs.stores.members.get_rooms_for_user(row.user_id))
        if users:
            effects.invalidations.append(("get_presence_for_user", users))
        return effects
