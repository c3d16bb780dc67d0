"""DeviceListStore: the device_lists stream and the queries /sync needs for it.

A change of a user's devices (added, renamed, deleted, new identity keys,
new cross-signing keys) is one position of the device_lists stream:
- one ``device_lists_stream`` row naming the user, which local users sharing
  a room with them see in /sync ``device_lists.changed``;
- one ``device_lists_outbound_pokes`` row per remote server sharing a room
  with a local user and per device, for federation
  (server-server API "Device Management", ``m.device_list_update``).
``user_signature_stream`` records that a user signed other users' master keys
(only that user's own devices need to hear about it).

All three tables draw positions from ONE StreamIdGenerator that starts past
the maximum of all of them: pokes may one day be written without a
``device_lists_stream`` row, and reusing their positions would make other
processes skip rows.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import attrs

from atrium.storage.database import DatabasePool, Transaction
from atrium.storage.id_generators import StreamIdGenerator

DEVICE_LIST_TABLES = (
    ("device_lists_stream", "stream_id"),
    ("device_lists_outbound_pokes", "stream_id"),
    ("user_signature_stream", "stream_id"),
)


@attrs.frozen
class MembershipDelta:
    """A change of one m.room.member entry of a room's current state."""

    room_id: str
    user_id: str
    membership: str | None
    prev_membership: str | None


class DeviceListStore:
    def __init__(self, db: DatabasePool, stream_id_gen: StreamIdGenerator) -> None:
        self.db = db
        self.stream_id_gen = stream_id_gen

    @classmethod
    async def create(cls, db: DatabasePool) -> DeviceListStore:
        return cls(db, await StreamIdGenerator.from_tables(db, DEVICE_LIST_TABLES))

    def get_device_stream_token(self) -> int:
        return self.stream_id_gen.get_current_token()

    # -- writes -----------------------------------------------------------------
    async def add_device_change(
        self, user_id: str, device_ids: Collection[str], hosts: Collection[str], ts: int
    ) -> int:
        """Record that ``user_id``'s devices changed; returns the position.

        ``hosts`` are the remote servers to poke (each gets a row per device).
        Each device gets its own stream ID: an m.device_list_update's
        ``stream_id`` must be unique per user (its ``prev_id`` chain names the
        previous update), so two devices may not share one. The stream itself
        gets one row for the user, at the last of them.
        """
        devices = sorted(set(device_ids)) or [None]

        def txn_fn(txn: Transaction, stream_ids: list[int]) -> None:
            txn.execute(
                "INSERT INTO device_lists_stream (stream_id, user_id) VALUES (?, ?)",
                (stream_ids[-1], user_id),
            )
            txn.insert_many(
                "device_lists_outbound_pokes",
                ("destination", "stream_id", "user_id", "device_id", "sent", "ts"),
                [
                    (host, stream_id, user_id, device_id, False, ts)
                    for host in sorted(hosts)
                    for stream_id, device_id in zip(stream_ids, devices, strict=True)
                    if device_id is not None
                ],
            )

        with self.stream_id_gen.get_next_mult(len(devices)) as stream_ids:
            await self.db.run_interaction("add_device_change", txn_fn, stream_ids)
        return stream_ids[-1]

    async def add_outbound_pokes(
        self, user_id: str, device_ids: Collection[str], hosts: Collection[str], ts: int
    ) -> int:
        """Queue pokes alone (a remote server newly sharing a room with a
        local user must learn of their devices); returns the position."""

        devices = sorted(set(device_ids))
        if not devices:
            return self.stream_id_gen.get_current_token()

        def txn_fn(txn: Transaction, stream_ids: list[int]) -> None:
            txn.insert_many(
                "device_lists_outbound_pokes",
                ("destination", "stream_id", "user_id", "device_id", "sent", "ts"),
                [
                    (h, stream_id, user_id, d, False, ts)
                    for h in sorted(hosts)
                    for stream_id, d in zip(stream_ids, devices, strict=True)
                ],
            )

        # One stream ID per device, as in add_device_change.
        with self.stream_id_gen.get_next_mult(len(devices)) as stream_ids:
            await self.db.run_interaction("add_outbound_pokes", txn_fn, stream_ids)
        return stream_ids[-1]

    async def add_user_signature_change(self, from_user_id: str, user_ids: Collection[str]) -> int:
        """Record that ``from_user_id`` signed the master keys of ``user_ids``."""

        def txn_fn(txn: Transaction, stream_id: int) -> None:
            txn.execute(
                "INSERT INTO user_signature_stream (stream_id, from_user_id, user_ids)"
                " VALUES (?, ?, ?)",
                (stream_id, from_user_id, json.dumps(sorted(user_ids))),
            )

        with self.stream_id_gen.get_next() as stream_id:
            await self.db.run_interaction("add_user_signature_change", txn_fn, stream_id)
        return stream_id

    # -- reads --------------------------------------------------------------------
    async def get_users_whose_devices_changed(self, from_id: int, to_id: int) -> set[str]:
        """Users with a device-list change in (from_id, to_id]."""
        if to_id <= from_id:
            return set()
        rows = await self.db.execute(
            "get_users_whose_devices_changed",
            "SELECT DISTINCT user_id FROM device_lists_stream WHERE stream_id > ? AND stream_id <= ?",
            from_id,
            to_id,
        )
        return {r[0] for r in rows}

    async def get_users_whose_signatures_changed(
        self, user_id: str, from_id: int, to_id: int
    ) -> set[str]:
        """Users whose keys ``user_id`` signed in (from_id, to_id]."""
        if to_id <= from_id:
            return set()
        rows = await self.db.execute(
            "get_users_whose_signatures_changed",
            "SELECT user_ids FROM user_signature_stream"
            " WHERE from_user_id = ? AND stream_id > ? AND stream_id <= ?",
            user_id,
            from_id,
            to_id,
        )
        return {u for r in rows for u in json.loads(r[0])}

    async def get_all_updates(self, from_id: int, to_id: int, limit: int) -> list[tuple[int, str]]:
        """(stream_id, entity) in (from_id, to_id]: a user ID whose devices
        (or signatures) changed, or a destination to poke; in position order.

        A destination's row only wakes its sender, which then reads every
        pending poke: rows of one change are folded into one."""
        rows = await self.db.execute(
            "get_device_list_updates",
            "SELECT stream_id, entity FROM ("
            " SELECT stream_id, user_id AS entity FROM device_lists_stream"
            " WHERE stream_id > ? AND stream_id <= ?"
            " UNION"
            # One row per destination and change: the devices of one change
            # have consecutive IDs (see add_device_change), the row is at the last.
            " SELECT MAX(stream_id) AS stream_id, destination AS entity"
            " FROM device_lists_outbound_pokes"
            " WHERE stream_id > ? AND stream_id <= ? GROUP BY destination, user_id, ts"
            " UNION"
            " SELECT stream_id, from_user_id AS entity FROM user_signature_stream"
            " WHERE stream_id > ? AND stream_id <= ?"
            ") AS u ORDER BY stream_id, entity LIMIT ?",
            *(from_id, to_id) * 3,
            limit,
        )
        return [(int(r[0]), r[1]) for r in rows]

    async def get_outbound_pokes(self, destination: str, from_id: int) -> list[tuple[Any, ...]]:
        """Unsent (stream_id, user_id, device_id) pokes for a destination, in order."""
        return await self.db.execute(
            "get_outbound_pokes",
            "SELECT stream_id, user_id, device_id FROM device_lists_outbound_pokes"
            " WHERE destination = ? AND stream_id > ? AND sent = FALSE ORDER BY stream_id",
            destination,
            from_id,
        )

    async def get_membership_deltas(
        self, user_id: str, room_ids: Collection[str], from_pos: int, to_pos: int
    ) -> list[MembershipDelta]:
        """Membership changes of current state in (from_pos, to_pos] of the
        events stream, in the rooms ``user_id`` is in (``room_ids``) and in
        every room where ``user_id``'s own membership changed."""
        if to_pos <= from_pos:
            return []
        select = (
            "SELECT d.room_id, d.state_key, m.membership, pm.membership"
            " FROM current_state_delta_stream AS d"
            " LEFT JOIN room_memberships AS m ON m.event_id = d.event_id"
            " LEFT JOIN room_memberships AS pm ON pm.event_id = d.prev_event_id"
            " WHERE d.type = 'm.room.member' AND d.stream_id > ? AND d.stream_id <= ?"
        )

        def txn_fn(txn: Transaction) -> list[tuple[Any, ...]]:
            own = txn.select_all(
                select + " AND d.state_key = ? ORDER BY d.stream_id", (from_pos, to_pos, user_id)
            )
            rooms = set(room_ids) | {r[0] for r in own}
            others = txn.select_many(
                select.replace(" WHERE ", " WHERE {in} AND ") + " ORDER BY d.stream_id",
                "d.room_id",
                rooms,
                (from_pos, to_pos),
            )
            return own + [r for r in others if r[1] != user_id]

        rows = await self.db.run_interaction("get_membership_deltas", txn_fn)
        return [MembershipDelta(*r) for r in rows]
