"""FederationStore: the tables federation owns (schema 0070) and its reads of
the E2EE outboxes.

- ``server_key_responses`` / ``server_verify_keys``: remote signing keys;
- ``federation_received_transactions``: answers to inbound transactions;
- ``federation_destinations``: outbound back-off;
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
