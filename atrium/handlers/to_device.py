"""Sending to-device messages (client-server API "Send-to-Device messaging").

``PUT /sendToDevice/{eventType}/{txnId}`` puts one message into the inbox of
each addressed device of local users (``*`` meaning every device the user
has), and queues messages for remote users per destination server for the
federation sender. The request is idempotent per sending device and
transaction ID. Writes to the to_device stream are serialised so each
published position is complete when readers see it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from atrium.errors import BadJson, InvalidParam, MissingParam
from atrium.handlers.e2e_keys import clean_str, is_user_id, server_of
from atrium.replication.publisher import StreamPublisher
from atrium.replication.streams.to_device import ToDeviceStreamRow
from atrium.storage.stores.accounts import AccountStore
from atrium.storage.stores.to_device import ToDeviceStore
from atrium.util.async_helpers import Linearizer


class ToDeviceHandler:
    def __init__(
        self,
        store: ToDeviceStore,
        accounts: AccountStore,
        publisher: StreamPublisher,
        clock: Any,
        is_mine: Any,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.publisher = publisher
        self.clock = clock
        self.is_mine = is_mine
        self._write_lock = Linearizer("to_device_writer")

    async def send_device_message(
        self,
        sender: str,
        sender_device: str,
        message_type: str,
        txn_id: str,
        messages: Any,
    ) -> None:
        """Deliver ``messages`` (user ID -> device ID or ``*`` -> content)."""
        if not clean_str(message_type) or not clean_str(txn_id):
            raise InvalidParam("Invalid event type or transaction ID")
        if messages is None:
            raise MissingParam("Missing 'messages'")
        if not isinstance(messages, dict):
            raise BadJson("'messages' must be an object")
        local: dict[str, dict[str, Mapping[str, Any]]] = {}
        remote: dict[str, dict[str, dict[str, Mapping[str, Any]]]] = {}
        for user_id, by_device in messages.items():
            if not is_user_id(user_id):
                raise InvalidParam(f"{user_id[:100]!r} is not a user ID")
            if not isinstance(by_device, dict) or not all(
                clean_str(d) and isinstance(c, dict) for d, c in by_device.items()
            ):
                raise BadJson("'messages' must map user IDs to {device ID: content object}")
            if not self.is_mine(user_id):
                remote.setdefault(server_of(user_id), {})[user_id] = by_device
                continue
            known = await self.accounts.get_devices(user_id)
            targets: dict[str, Mapping[str, Any]] = {}
            # An explicit device entry wins over `*` for that device: one
            # message per device per request (send_to_device.md).
            if "*" in by_device:
                targets = {d: by_device["*"] for d in known}
            for device_id, content in by_device.items():
                if device_id != "*" and device_id in known:
                    targets[device_id] = content
            if targets:
                local[user_id] = targets

        rows = [ToDeviceStreamRow(u) for u in sorted(local)] + [
            ToDeviceStreamRow(d) for d in sorted(remote)
        ]
        async with self._write_lock.queue(()):
            stream_id = await self.store.add_messages(
                sender,
                sender_device,
                txn_id,
                message_type,
                local,
                remote,
                self.clock.time_msec(),
            )
            if stream_id is not None and rows:
                await self.publisher.publish(
                    "to_device", self.store.get_to_device_stream_token(), rows
                )

    # -- federation (wt/fed) --------------------------------------------------------------
    async def receive_remote_messages(
        self, sender: str, message_type: str, message_id: str, messages: Mapping[str, Any]
    ) -> None:
        """An m.direct_to_device EDU: deliver to the addressed local devices.

        ``message_id`` deduplicates like a client transaction ID (a server
        retrying a transaction must not deliver twice); remote addressees
        and malformed entries are ignored.
        """
        local: dict[str, dict[str, Mapping[str, Any]]] = {}
        for user_id, by_device in messages.items():
            if not is_user_id(user_id) or not self.is_mine(user_id):
                continue
            if not isinstance(by_device, dict):
                continue
            known = await self.accounts.get_devices(user_id)
            targets: dict[str, Mapping[str, Any]] = {}
            if isinstance(by_device.get("*"), dict):
                targets = {d: by_device["*"] for d in known}
            for device_id, content in by_device.items():
                if device_id != "*" and device_id in known and isinstance(content, dict):
                    targets[device_id] = content
            if targets:
                local[user_id] = targets
        if not local:
            return
        async with self._write_lock.queue(()):
            stream_id = await self.store.add_messages(
                sender,
                REMOTE_SENDER_DEVICE,
                message_id,
                message_type,
                local,
                {},
                self.clock.time_msec(),
            )
            if stream_id is not None:
                await self.publisher.publish(
                    "to_device",
                    self.store.get_to_device_stream_token(),
                    [ToDeviceStreamRow(u) for u in sorted(local)],
                )


# The "device" remote to-device messages are deduplicated under (their
# message_id is unique per sending server).
REMOTE_SENDER_DEVICE = "*federation*"
