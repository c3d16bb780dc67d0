"""ToDeviceStore: the per-device inbox of send-to-device messages.

Spec: client-server API "Send-to-Device messaging", "Server behaviour":
messages wait in the inbox of each recipient device until that device's
/sync acknowledges them, by coming back with a ``since`` token at or past the
message's position; then they are deleted (``delete_messages_for_device``).
Messages for remote users are queued per destination in
``device_federation_outbox`` for the federation sender.

Positions come from the to_device stream's StreamIdGenerator, which only
the stream's writer may hold; one ``sendToDevice`` request is one position.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

from atrium.storage.database import DatabasePool, Transaction
from atrium.storage.id_generators import StreamIdGenerator

# user ID -> device ID -> message content
Messages = Mapping[str, Mapping[str, Mapping[str, Any]]]

TO_DEVICE_TABLES = (("device_inbox", "stream_id"), ("device_federation_outbox", "stream_id"))


class ToDeviceStore:
    def __init__(self, db: DatabasePool, stream_id_gen: StreamIdGenerator) -> None:
        self.db = db
        self.stream_id_gen = stream_id_gen

    @classmethod
    async def create(cls, db: DatabasePool) -> ToDeviceStore:
        """A store whose generator starts past every stored position."""
        return cls(db, await StreamIdGenerator.from_tables(db, TO_DEVICE_TABLES))

    def get_to_device_stream_token(self) -> int:
        return self.stream_id_gen.get_current_token()

    async def add_messages(
        self,
        sender: str,
        sender_device: str,
        txn_id: str,
        message_type: str,
        local: Messages,
        remote: Mapping[str, Messages],
        now_ms: int,
    ) -> int | None:
        """Queue one request's messages; returns their stream position.

        ``local`` holds concrete local devices; ``remote`` maps a destination
        server to its users' messages. Returns None, writing nothing, when the
        sending device already used ``txn_id``: the client is retrying a
        request that did go through (spec: "Transaction identifiers").
        """
        inbox_rows = [
            (
                user_id,
                device_id,
                json.dumps({"sender": sender, "type": message_type, "content": content}),
            )
            for user_id, by_device in local.items()
            for device_id, content in by_device.items()
        ]

        def txn_fn(txn: Transaction, stream_id: int) -> bool:
            txn.execute(
                "INSERT INTO device_inbox_txns (user_id, device_id, txn_id, received_ts)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (user_id, device_id, txn_id) DO NOTHING",
                (sender, sender_device, txn_id, now_ms),
            )
            if txn.rowcount != 1:
                return False
            txn.insert_many(
                "device_inbox",
                ("user_id", "device_id", "stream_id", "message_json"),
                [(u, d, stream_id, m) for u, d, m in inbox_rows],
            )
            txn.insert_many(
                "device_federation_outbox",
                (
                    "destination",
                    "stream_id",
                    "queued_ts",
                    "sender",
                    "message_type",
                    "messages_json",
                ),
                [
                    (
                        destination,
                        stream_id,
                        now_ms,
                        sender,
                        message_type,
                        json.dumps(messages),
                    )
                    for destination, messages in remote.items()
                ],
            )
            return True

        with self.stream_id_gen.get_next() as stream_id:
            written = await self.db.run_interaction("add_to_device_messages", txn_fn, stream_id)
        return stream_id if written else None

    async def get_messages_for_device(
        self, user_id: str, device_id: str, from_id: int, to_id: int, limit: int = 100
    ) -> tuple[list[dict[str, Any]], int]:
        """Messages with from_id < stream_id <= to_id, oldest first, at most ``limit``.

        Also returns how far they reach: ``to_id`` when every message in the
        range was returned, else the position of the last one returned (the
        rest come in the next /sync). A device gets at most one message per
        position, so cutting between positions never splits a request.
        """
        rows = await self.db.execute(
            "get_messages_for_device",
            "SELECT stream_id, message_json FROM device_inbox"
            " WHERE user_id = ? AND device_id = ? AND stream_id > ? AND stream_id <= ?"
            " ORDER BY stream_id LIMIT ?",
            user_id,
            device_id,
            from_id,
            to_id,
            limit,
        )
        messages = [json.loads(r[1]) for r in rows]
        upto = int(rows[-1][0]) if len(rows) == limit else to_id
        return messages, upto

    async def delete_messages_for_device(self, user_id: str, device_id: str, up_to: int) -> int:
        """Delete messages the device has acknowledged (stream_id <= up_to)."""

        def txn_fn(txn: Transaction) -> int:
            txn.execute(
                "DELETE FROM device_inbox WHERE user_id = ? AND device_id = ? AND stream_id <= ?",
                (user_id, device_id, up_to),
            )
            return txn.rowcount

        return await self.db.run_interaction("delete_messages_for_device", txn_fn)

    async def delete_devices(self, user_id: str, device_ids: Collection[str]) -> None:
        """Drop the inboxes (and transaction IDs) of deleted devices."""

        def txn_fn(txn: Transaction) -> None:
            for device_id in set(device_ids):
                txn.execute(
                    "DELETE FROM device_inbox WHERE user_id = ? AND device_id = ?",
                    (user_id, device_id),
                )
                txn.execute(
                    "DELETE FROM device_inbox_txns WHERE user_id = ? AND device_id = ?",
                    (user_id, device_id),
                )

        await self.db.run_interaction("delete_device_inboxes", txn_fn)

    async def get_all_updates(self, from_id: int, to_id: int, limit: int) -> list[tuple[int, str]]:
        """(stream_id, entity) in (from_id, to_id]: a local user ID or a
        destination, once per position, in position order."""
        rows = await self.db.execute(
            "get_to_device_updates",
            "SELECT stream_id, entity FROM ("
            " SELECT DISTINCT stream_id, user_id AS entity FROM device_inbox"
            " WHERE stream_id > ? AND stream_id <= ?"
            " UNION"
            " SELECT DISTINCT stream_id, destination AS entity FROM device_federation_outbox"
            " WHERE stream_id > ? AND stream_id <= ?"
            ") AS u ORDER BY stream_id, entity LIMIT ?",
            from_id,
            to_id,
            from_id,
            to_id,
            limit,
        )
        return [(int(r[0]), r[1]) for r in rows]
