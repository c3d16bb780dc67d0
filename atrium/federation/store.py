"""FederationStore: the tables federation owns (schema 0070) and its reads of
the E2EE outboxes.

- ``server_key_responses`` / ``server_verify_keys``: remote signing keys;
- ``federation_received_transactions``: answers to inbound transactions;
- ``federation_destinations``: outbound back-off;
- ``federation_stream_positions`` / ``federation_destination_rooms`` (schema
  0105): how far the sender has handled the events stream, and per
  destination and room the latest event queued and the latest sent, from
  which catch-up finds what a destination missed;
- the federation sender's side of ``device_federation_outbox`` (remote
  to-device messages) and ``device_lists_outbound_pokes`` (device-list
  updates, one row per destination), which the E2EE code fills.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

import attrs

from atrium.storage.database import DatabasePool, Transaction


@attrs.frozen
class StoredKey:
    key_id: str
    verify_key: str  # unpadded base64
    valid_until_ts: int
    expired_ts: int | None
    fetched_ts: int


@attrs.frozen
class OutboxMessage:
    """One queued to-device request for a destination."""

    stream_id: int
    sender: str
    message_type: str
    messages: dict[str, Any]


@attrs.frozen
class RoomBehind:
    """A room whose latest event queued for a destination was not yet sent."""

    room_id: str
    queued: int  # stream ordering of the latest event queued
    sent: int | None  # of the latest event sent; None: nothing sent yet


@attrs.frozen
class DevicePoke:
    stream_id: int
    user_id: str
    device_id: str


class FederationStore:
    def __init__(self, db: DatabasePool) -> None:
        self.db = db

    # -- server keys ---------------------------------------------------------------
    async def store_server_keys(
        self,
        server_name: str,
        from_server: str,
        fetched_ts: int,
        valid_until_ts: int,
        response: Mapping[str, Any],
        keys: Collection[StoredKey],
    ) -> None:
        """Keep a key response and the keys it lists (replacing older entries)."""
        raw = json.dumps(response, separators=(",", ":"), ensure_ascii=False)

        def txn_fn(txn: Transaction) -> None:
            txn.upsert(
                "server_key_responses",
                {"server_name": server_name},
                {
                    "from_server": from_server,
                    "fetched_ts": fetched_ts,
                    "valid_until_ts": valid_until_ts,
                    "response_json": raw,
                },
            )
            for key in keys:
                txn.upsert(
                    "server_verify_keys",
                    {"server_name": server_name, "key_id": key.key_id},
                    {
                        "verify_key": key.verify_key,
                        "valid_until_ts": key.valid_until_ts,
                        "expired_ts": key.expired_ts,
                        "fetched_ts": key.fetched_ts,
                    },
                )

        await self.db.run_interaction("store_server_keys", txn_fn)

    async def get_server_keys(self, server_name: str) -> dict[str, StoredKey]:
        rows = await self.db.execute(
            "get_server_keys",
            "SELECT key_id, verify_key, valid_until_ts, expired_ts, fetched_ts"
            " FROM server_verify_keys WHERE server_name = ?",
            server_name,
        )
        return {
            r[0]: StoredKey(r[0], r[1], int(r[2]), None if r[3] is None else int(r[3]), int(r[4]))
            for r in rows
        }

    async def get_key_response(self, server_name: str) -> tuple[dict[str, Any], int] | None:
        """(the stored response of a server, its valid_until_ts), if any."""
        rows = await self.db.execute(
            "get_key_response",
            "SELECT response_json, valid_until_ts FROM server_key_responses WHERE server_name = ?",
            server_name,
        )
        if not rows:
            return None
        return json.loads(rows[0][0]), int(rows[0][1])

    # -- received transactions --------------------------------------------------------
    async def get_received_transaction(
        self, origin: str, transaction_id: str
    ) -> tuple[int, Any] | None:
        rows = await self.db.execute(
            "get_received_transaction",
            "SELECT response_code, response_json FROM federation_received_transactions"
            " WHERE origin = ? AND transaction_id = ?",
            origin,
            transaction_id,
        )
        return (int(rows[0][0]), json.loads(rows[0][1])) if rows else None

    async def set_received_transaction(
        self, origin: str, transaction_id: str, code: int, response: Any, ts: int
    ) -> None:
        def txn_fn(txn: Transaction) -> None:
            txn.upsert(
                "federation_received_transactions",
                {"origin": origin, "transaction_id": transaction_id},
                {"response_code": code, "response_json": json.dumps(response), "received_ts": ts},
            )

        await self.db.run_interaction("set_received_transaction", txn_fn)

    async def prune_received_transactions(self, before_ts: int) -> None:
        await self.db.execute(
            "prune_received_transactions",
            "DELETE FROM federation_received_transactions WHERE received_ts < ?",
            before_ts,
        )

    # -- destination back-off ------------------------------------------------------------
    async def get_destination_retry(self, destination: str) -> tuple[int, int] | None:
        """(retry_last_ts, retry_interval) of a destination in back-off."""
        rows = await self.db.execute(
            "get_destination_retry",
            "SELECT retry_last_ts, retry_interval FROM federation_destinations"
            " WHERE destination = ?",
            destination,
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    async def set_destination_retry(self, destination: str, last_ts: int, interval: int) -> None:
        def txn_fn(txn: Transaction) -> None:
            if interval <= 0:
                txn.execute(
                    "DELETE FROM federation_destinations WHERE destination = ?", (destination,)
                )
            else:
                txn.upsert(
                    "federation_destinations",
                    {"destination": destination},
                    {"retry_last_ts": last_ts, "retry_interval": interval},
                )

        await self.db.run_interaction("set_destination_retry", txn_fn)

    # -- catch-up: what was handled, queued and sent --------------------------------------
    async def get_sender_positions(self, sender_instance: str) -> dict[str, int]:
        """events writer -> the position up to which ``sender_instance`` handled its rows."""
        rows = await self.db.execute(
            "get_federation_sender_positions",
            "SELECT writer_instance, stream_id FROM federation_stream_positions"
            " WHERE sender_instance = ?",
            sender_instance,
        )
        return {r[0]: int(r[1]) for r in rows}

    async def record_queued(
        self,
        sender_instance: str,
        positions: Mapping[str, int],
        queued: Mapping[tuple[str, str], int],
    ) -> None:
        """In one transaction: (destination, room) -> stream ordering of the latest
        event queued for it, and the sender's new events-stream positions."""

        def txn_fn(txn: Transaction) -> None:
            # Never lowered: rows handled again after a crash carry older orderings.
            txn.executemany(
                "INSERT INTO federation_destination_rooms"
                " (destination, room_id, queued_stream_ordering) VALUES (?, ?, ?)"
                " ON CONFLICT (destination, room_id) DO UPDATE SET queued_stream_ordering ="
                " CASE WHEN EXCLUDED.queued_stream_ordering"
                " > federation_destination_rooms.queued_stream_ordering"
                " THEN EXCLUDED.queued_stream_ordering"
                " ELSE federation_destination_rooms.queued_stream_ordering END",
                [(d, r, o) for (d, r), o in sorted(queued.items())],
            )
            for writer, position in positions.items():
                txn.upsert(
                    "federation_stream_positions",
                    {"sender_instance": sender_instance, "writer_instance": writer},
                    {"stream_id": position},
                )

        await self.db.run_interaction("federation_record_queued", txn_fn)

    async def mark_rooms_sent(self, destination: str, sent: Mapping[str, int]) -> None:
        """room -> stream ordering of the latest of its events ``destination`` accepted."""
        if not sent:
            return

        def txn_fn(txn: Transaction) -> None:
            txn.executemany(
                "UPDATE federation_destination_rooms SET sent_stream_ordering = ?"
                " WHERE destination = ? AND room_id = ?"
                " AND (sent_stream_ordering IS NULL OR sent_stream_ordering < ?)",
                [(o, destination, r, o) for r, o in sorted(sent.items())],
            )

        await self.db.run_interaction("federation_mark_rooms_sent", txn_fn)

    async def destinations_behind(self) -> list[str]:
        rows = await self.db.execute(
            "federation_destinations_behind",
            "SELECT DISTINCT destination FROM federation_destination_rooms"
            " WHERE sent_stream_ordering IS NULL OR queued_stream_ordering > sent_stream_ordering",
        )
        return sorted(r[0] for r in rows)

    async def get_rooms_behind(self, destination: str, limit: int) -> list[RoomBehind]:
        """The rooms ``destination`` is behind in, oldest latest event first."""
        rows = await self.db.execute(
            "federation_rooms_behind",
            "SELECT room_id, queued_stream_ordering, sent_stream_ordering"
            " FROM federation_destination_rooms WHERE destination = ?"
            " AND (sent_stream_ordering IS NULL OR queued_stream_ordering > sent_stream_ordering)"
            " ORDER BY queued_stream_ordering LIMIT ?",
            destination,
            limit,
        )
        return [RoomBehind(r[0], int(r[1]), None if r[2] is None else int(r[2])) for r in rows]

    async def get_missed_event_ids(
        self, room_id: str, destination: str, after: int, upto: int, limit: int
    ) -> list[str] | None:
        """The room's timeline events with ``after`` < stream ordering <= ``upto``,
        oldest first; None when there are more than ``limit`` or when the
        membership of a user of ``destination`` changed in between (it may not
        have been in the room for all of them)."""

        def txn_fn(txn: Transaction) -> list[str] | None:
            rows = txn.select_all(
                "SELECT event_id, type, state_key FROM events WHERE room_id = ?"
                " AND stream_ordering > ? AND stream_ordering <= ? AND outlier = FALSE"
                " AND rejection_reason IS NULL ORDER BY stream_ordering LIMIT ?",
                (room_id, after, upto, limit + 1),
            )
            if len(rows) > limit:
                return None
            suffix = ":" + destination
            for _, event_type, state_key in rows:
                if event_type == "m.room.member" and (state_key or "").endswith(suffix):
                    return None
            return [r[0] for r in rows]

        return await self.db.run_interaction("federation_missed_event_ids", txn_fn)

    async def get_event_id_at(self, room_id: str, stream_ordering: int) -> str | None:
        rows = await self.db.execute(
            "federation_event_id_at",
            "SELECT event_id FROM events WHERE room_id = ? AND stream_ordering = ?",
            room_id,
            stream_ordering,
        )
        return rows[0][0] if rows else None

    # -- to-device messages for remote users ------------------------------------------------
    async def get_outbox_messages(self, destination: str, limit: int) -> list[OutboxMessage]:
        rows = await self.db.execute(
            "get_outbox_messages",
            "SELECT stream_id, sender, message_type, messages_json FROM device_federation_outbox"
            " WHERE destination = ? ORDER BY stream_id LIMIT ?",
            destination,
            limit,
        )
        return [OutboxMessage(int(r[0]), r[1], r[2], json.loads(r[3])) for r in rows]

    async def delete_outbox_messages(self, destination: str, up_to_stream_id: int) -> None:
        await self.db.execute(
            "delete_outbox_messages",
            "DELETE FROM device_federation_outbox WHERE destination = ? AND stream_id <= ?",
            destination,
            up_to_stream_id,
        )

    async def destinations_with_outbox(self) -> list[str]:
        rows = await self.db.execute(
            "destinations_with_outbox",
            "SELECT DISTINCT destination FROM device_federation_outbox",
        )
        return [r[0] for r in rows]

    # -- device-list pokes -----------------------------------------------------------------
    async def get_pending_pokes(self, destination: str, limit: int) -> list[DevicePoke]:
        rows = await self.db.execute(
            "get_pending_pokes",
            "SELECT stream_id, user_id, device_id FROM device_lists_outbound_pokes"
            " WHERE destination = ? AND sent = FALSE ORDER BY stream_id, user_id, device_id"
            " LIMIT ?",
            destination,
            limit,
        )
        return [DevicePoke(int(r[0]), r[1], r[2]) for r in rows]

    async def get_last_sent_poke_ids(
        self, destination: str, user_ids: Collection[str]
    ) -> dict[str, int]:
        """user -> highest stream_id already sent to the destination (for prev_id)."""
        if not user_ids:
            return {}

        def txn_fn(txn: Transaction) -> list[tuple[Any, ...]]:
            return txn.select_many(
                "SELECT user_id, MAX(stream_id) FROM device_lists_outbound_pokes"
                " WHERE {in} AND destination = ? AND sent = TRUE GROUP BY user_id",
                "user_id",
                user_ids,
                (destination,),
            )

        rows = await self.db.run_interaction("get_last_sent_poke_ids", txn_fn)
        return {r[0]: int(r[1]) for r in rows}

    async def mark_pokes_sent(self, destination: str, pokes: Collection[DevicePoke]) -> None:
        def txn_fn(txn: Transaction) -> None:
            txn.executemany(
                "UPDATE device_lists_outbound_pokes SET sent = TRUE"
                " WHERE destination = ? AND stream_id = ? AND user_id = ? AND device_id = ?",
                [(destination, p.stream_id, p.user_id, p.device_id) for p in pokes],
            )

        await self.db.run_interaction("mark_pokes_sent", txn_fn)

    async def destinations_with_pending_pokes(self) -> list[str]:
        rows = await self.db.execute(
            "destinations_with_pending_pokes",
            "SELECT DISTINCT destination FROM device_lists_outbound_pokes WHERE sent = FALSE",
        )
        return [r[0] for r in rows]

    async def get_device_list_stream_id(self, user_id: str) -> int:
        rows = await self.db.execute(
            "get_device_list_stream_id",
            "SELECT MAX(stream_id) FROM device_lists_stream WHERE user_id = ?",
            user_id,
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0
