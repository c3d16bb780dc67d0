"""The to_device stream: one row per recipient of a sendToDevice request.

The entity is a local user ID (their devices have new messages in
``device_inbox``; the row wakes that user's /sync) or a remote server name
(messages wait in ``device_federation_outbox`` for the federation sender).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from atrium.replication.streams import register_stream
from atrium.replication.streams._base import Effects, Stream, StreamRow, StreamUpdates
from atrium.replication.streams.device_lists import page_of_rows


@attrs.frozen
class ToDeviceStreamRow(StreamRow):
    # A local user ID ("@...") or a destination server name.
    entity: str


@register_stream
class ToDeviceStream(Stream):
    NAME = "to_device"
    ROW_TYPE = ToDeviceStreamRow
    TOKEN_KEY = "to_device"

    def current_token(self, instance_name: str) -> int:
        return self.hs.to_device_store.get_to_device_stream_token()

    async def get_updates(
        self, instance_name: str, from_token: int, to_token: int, limit: int
    ) -> StreamUpdates:
        rows = await self.hs.to_device_store.get_all_updates(from_token, to_token, limit)
        return page_of_rows(
            [(sid, ToDeviceStreamRow(entity)) for sid, entity in rows], to_token, limit
        )

    async def effects(self, rows: Iterable[StreamRow]) -> Effects:
        effects = Effects()
        for row in rows:
            assert isinstance(row, ToDeviceStreamRow)
            if row.entity.startswith("@"):
                effects.users.add(row.entity)
        return effects
