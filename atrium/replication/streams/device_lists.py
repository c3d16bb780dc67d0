"""The device_lists stream: one row per entity whose device list changed.

An entity is a user ID (their devices or cross-signing keys changed, or they
signed other users' keys) or a remote server name (it has device-list
updates to be sent: ``device_lists_outbound_pokes``). Rows of one change
share its position. Applying a user row wakes that user and everyone in a
room with them, so their /sync reports the change in ``device_lists``.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from atrium.replication.streams import register_stream
from atrium.replication.streams._base import Effects, Stream, StreamRow, StreamUpdates


@attrs.frozen
class DeviceListsStreamRow(StreamRow):
    # A user ID ("@...") or a destination server name.
    entity: str


def page_of_rows(rows: list[tuple[int, StreamRow]], to_token: int, limit: int) -> StreamUpdates:
    """A StreamUpdates page from rows read with ``LIMIT limit``.

    When the limit cut the page, the rows of its last position may be
    incomplete: they are dropped and the page ends just before that position
    (unless the page holds that one position only, then it is returned whole
    as far as it goes, so catch-up always progresses).
    """
    if len(rows) < limit:
        return StreamUpdates(rows, to_token, False)
    last = rows[-1][0]
    kept = [r for r in rows if r[0] < last]
    if not kept:
        return StreamUpdates(rows, last, True)
    return StreamUpdates(kept, kept[-1][0], True)


@register_stream
class DeviceListsStream(Stream):
    NAME = "device_lists"
    ROW_TYPE = DeviceListsStreamRow
    TOKEN_KEY = "device_lists"

    def current_token(self, instance_name: str) -> int:
        return self.hs.device_lists_store.get_device_stream_token()

    async def get_updates(
        self, instance_name: str, from_token: int, to_token: int, limit: int
    ) -> StreamUpdates:
        rows = await self.hs.device_lists_store.get_all_updates(from_token, to_token, limit)
        return page_of_rows(
            [(sid, DeviceListsStreamRow(entity)) for sid, entity in rows], to_token, limit
        )

    async def effects(self, rows: Iterable[StreamRow]) -> Effects:
        effects = Effects()
        members = self.hs.stores.members
        for row in rows:
            assert isinstance(row, DeviceListsStreamRow)
            if not row.entity.startswith("@"):
                continue
            effects.users.add(row.entity)
            effects.rooms.update(await members.get_rooms_for_user(row.entity))
        return effects
