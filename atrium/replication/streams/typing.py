"""The typing stream: in memory on its writer, one row per room whose set
of typing users changed, carrying the whole new set (spec: m.typing
replaces what the client knew).

Positions come from the typing handler's own counter (no database); it
starts at the clock's milliseconds so positions keep increasing across
restarts and a client's old ``since`` never hides new typing changes.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from atrium.replication.streams import register_stream
from atrium.replication.streams._base import Effects, Stream, StreamRow, StreamUpdates


@attrs.frozen
class TypingStreamRow(StreamRow):
    room_id: str
    user_ids: list[str]


@register_stream
class TypingStream(Stream):
    NAME = "typing"
    ROW_TYPE = TypingStreamRow
    TOKEN_KEY = "typing"
    # Other processes fetch missed rows from the writer over HTTP.
    IN_MEMORY = True

    def current_token(self, instance_name: str) -> int:
        return self.hs.typing.current_token()

    async def get_updates(
        self, instance_name: str, from_token: int, to_token: int, limit: int
    ) -> StreamUpdates:
        return self.hs.typing.get_updates(from_token, to_token, limit)

    def apply_rows(self, instance_name: str, token: int, rows: Iterable[StreamRow]) -> None:
        # Processes other than the writer keep a copy of each room's set.
        if instance_name != self.hs.instance_name:
            for row in rows:
                assert isinstance(row, TypingStreamRow)
                self.hs.typing.apply_replicated(token, row.room_id, row.user_ids)

    async def effects(self, rows: Iterable[StreamRow]) -> Effects:
        rooms = set()
        for row in rows:
            assert isinstance(row, TypingStreamRow)
            rooms.add(row.room_id)
        return Effects(rooms=rooms)
