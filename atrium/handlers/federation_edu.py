"""EDUs received from other servers, applied to the local handlers.

Server-server API "EDUs" and the sections on typing, receipts, presence,
send-to-device and device management (m.device_list_update and
m.signing_key_update also feed the cache of remote device lists,
``atrium.handlers.remote_device_lists``). Every EDU is about users of the
sending server: one naming a user of another server is ignored (a server
may only speak for its own users), as is one about a room the user is not
joined to. A malformed EDU is logged and dropped; it never fails the
transaction.

Each EDU type writes one replication stream (``EDU_STREAMS``), and only that
stream's writer (the master) may write it. A process that receives a
transaction but does not write the stream (a ``federation_reader`` worker)
forwards those EDUs, with their origin, to the writer over the
authenticated ``federation_edus`` replication endpoint, deduplicated by the
origin's transaction ID; the writer applies them exactly as if it had
received them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeGuard

from atrium.events.validation import is_valid_room_id, is_valid_user_id
from atrium.handlers.remote_device_lists import parse_device_list_update
from atrium.replication.streams.receipts import row_for_receipt

logger = logging.getLogger(__name__)

# How long a remote user shows as typing after a typing EDU, unless
# another EDU says they stopped (remote servers resend while typing).
FEDERATION_TYPING_TIMEOUT_MS = 60_000
PRESENCE_STATES = ("online", "unavailable", "offline")


# The stream each EDU type writes (docs/workers.md, "Stream writers").
EDU_STREAMS = {
    "m.typing": "typing",
    "m.receipt": "receipts",
    "m.presence": "presence",
    "m.direct_to_device": "to_device",
    "m.device_list_update": "device_lists",
    "m.signing_key_update": "device_lists",
}
FEDERATION_EDUS_ENDPOINT = "federation_edus"

# async (writer instance, origin, origin's transaction ID, EDUs) -> None
ForwardEdus = Callable[[str, str, str, list[dict[str, Any]]], Awaitable[None]]


def _domain(user_id: str) -> str:
    return user_id.split(":", 1)[1]


class FederationEduHandler:
    def __init__(
        self,
        hs: Any,
        *,
        writer_for_stream: Callable[[str], str] | None = None,
        forward: ForwardEdus | None = None,
    ) -> None:
        # The local handlers and stores EDUs feed (typing, receipts, presence,
        # to-device, device lists); taken from the composition root.
        self.hs = hs
        self.clock = hs.clock
        # stream -> the instance writing it; None (or ourselves): apply here.
        self._writer_for_stream = writer_for_stream
        self._forward = forward
        self._handlers: dict[str, Callable[[str, dict[str, Any]], Awaitable[None]]] = {
            "m.typing": self._on_typing,
            "m.receipt": self._on_receipt,
            "m.presence": self._on_presence,
            "m.direct_to_device": self._on_to_device,
            "m.device_list_update": self._on_device_list_update,
            "m.signing_key_update": self._on_signing_key_update,
        }

    def writes_here(self, edu_type: str) -> bool:
        """Whether EDUs of this type are applied by this process (module doc)."""
        return self._writer_of(edu_type) is None

    def _writer_of(self, edu_type: Any) -> str | None:
        """The other process that must apply this EDU type, if any."""
        stream = EDU_STREAMS.get(edu_type) if isinstance(edu_type, str) else None
        if stream is None or self._writer_for_stream is None or self._forward is None:
            return None
        writer = self._writer_for_stream(stream)
        return None if writer == self.hs.instance_name else writer

    async def on_edus(self, origin: str, txn_id: str, edus: list[Any]) -> None:
        """The EDUs of one transaction: applied here or forwarded to their writer."""
        by_writer: dict[str, list[dict[str, Any]]] = {}
        for edu in edus:
            writer = self._writer_of(edu.get("edu_type")) if isinstance(edu, dict) else None
            if writer is None:
                await self.on_edu(origin, edu)
            else:
                by_writer.setdefault(writer, []).append(edu)
        for writer, batch in sorted(by_writer.items()):
            assert self._forward is not None
            try:
                await self._forward(writer, origin, txn_id, batch)
            except Exception:
                # EDUs are best effort (server-server API "EDUs"); the PDUs of
                # the transaction are already handled, so it is not failed.
                logger.exception(
                    "Forwarding %d EDUs from %s to %s failed", len(batch), origin, writer
                )

    async def handle_forwarded(self, body: dict[str, Any]) -> tuple[int, Any]:
        """The writer's side of the ``federation_edus`` replication endpoint."""
        origin, edus = body.get("origin"), body.get("edus")
        if not isinstance(origin, str) or not isinstance(edus, list):
            return 400, {"errcode": "M_BAD_JSON", "error": "'origin' and 'edus' are required"}
        for edu in edus:
            await self.on_edu(origin, edu)
        return 200, {}

    async def on_edu(self, origin: str, edu: Any) -> None:
        if not isinstance(edu, dict):
            return
        edu_type, content = edu.get("edu_type"), edu.get("content")
        handler = self._handlers.get(edu_type) if isinstance(edu_type, str) else None
        if handler is None or not isinstance(content, dict):
            logger.debug("Ignoring EDU %.100r from %s", edu_type, origin)
            return
        try:
            await handler(origin, content)
        except Exception:
            logger.exception("Handling %s EDU from %s failed", edu_type, origin)

    def _is_from(self, origin: str, user_id: Any) -> TypeGuard[str]:
        return isinstance(user_id, str) and is_valid_user_id(user_id) and _domain(user_id) == origin

    async def _joined(self, user_id: str, room_id: Any) -> bool:
        return (
            isinstance(room_id, str)
            and is_valid_room_id(room_id)
            and user_id in await self.hs.stores.members.get_users_in_room(room_id)
        )

    # -- typing -------------------------------------------------------------------------------
    async def _on_typing(self, origin: str, content: dict[str, Any]) -> None:
        user_id: Any = content.get("user_id")
        room_id: Any = content.get("room_id")
        if not self._is_from(origin, user_id) or not await self._joined(user_id, room_id):
            return
        if content.get("typing") is True:
            await self.hs.typing.started_typing(user_id, room_id, FEDERATION_TYPING_TIMEOUT_MS)
        else:
            await self.hs.typing.stopped_typing(user_id, room_id)

    # -- receipts ---------------------------------------------------------------------------------
    async def _on_receipt(self, origin: str, content: dict[str, Any]) -> None:
        store = self.hs.receipts_store
        for room_id, by_type in content.items():
            if not isinstance(by_type, dict):
                continue
            # Private receipts never leave their server; only m.read is shared.
            by_user = by_type.get("m.read")
            if not isinstance(by_user, dict):
                continue
            for user_id, receipt in by_user.items():
                if not self._is_from(origin, user_id) or not await self._joined(user_id, room_id):
                    continue
                event_ids = receipt.get("event_ids") if isinstance(receipt, dict) else None
                if not isinstance(event_ids, list) or not event_ids:
                    continue
                event_id = event_ids[0]
                data = receipt.get("data")
                data = dict(data) if isinstance(data, dict) else {}
                thread_id = data.get("thread_id")
                if not isinstance(event_id, str) or (
                    thread_id is not None and not isinstance(thread_id, str)
                ):
                    continue
                stored = await store.insert_receipt(
                    room_id, "m.read", user_id, event_id, thread_id, data
                )
                if stored is not None:
                    await self.hs.publisher.publish(
                        "receipts", store.get_current_token(), [row_for_receipt(stored)]
                    )

    # -- presence -----------------------------------------------------------------------------------
    async def _on_presence(self, origin: str, content: dict[str, Any]) -> None:
        from atrium.replication.streams.presence import row_for_presence

        push = content.get("push")
        if not isinstance(push, list):
            return
        now = self.clock.time_msec()
        for update in push:
            if not isinstance(update, dict):
                continue
            user_id, state = update.get("user_id"), update.get("presence")
            if not self._is_from(origin, user_id) or state not in PRESENCE_STATES:
                continue
            # Only users we share a room with are of interest here.
            if not await self.hs.stores.members.get_rooms_for_user(user_id):
                continue
            status_msg = update.get("status_msg")
            if not isinstance(status_msg, str):
                status_msg = None
            ago = update.get("last_active_ago")
            ago = ago if isinstance(ago, int) and ago >= 0 else 0
            presence = await self.hs.presence_store.set_presence(
                user_id, state, status_msg, now - ago
            )
            await self.hs.publisher.publish(
                "presence", self.hs.presence_store.get_current_token(), [row_for_presence(presence)]
            )

    # -- send-to-device ---------------------------------------------------------------------------------
    async def _on_to_device(self, origin: str, content: dict[str, Any]) -> None:
        sender = content.get("sender")
        message_type, message_id = content.get("type"), content.get("message_id")
        messages = content.get("messages")
        if not self._is_from(origin, sender):
            return
        if not isinstance(message_type, str) or not isinstance(message_id, str):
            return
        if not isinstance(messages, dict):
            return
        await self.hs.to_device.receive_remote_messages(
            sender, message_type, f"{origin}:{message_id}", messages
        )

    # -- device lists -------------------------------------------------------------------------------------
    async def _on_device_list_update(self, origin: str, content: dict[str, Any]) -> None:
        update = parse_device_list_update(content)
        if update is None or not self._is_from(origin, update.user_id):
            logger.debug("Ignoring a malformed or foreign m.device_list_update from %s", origin)
            return
        cache = self.hs.remote_device_lists
        if not await self._shares_room(update.user_id):
            if cache is not None:
                await cache.stop_tracking(update.user_id)
            return
        if cache is not None:
            await cache.on_device_list_update(update)
        await self.hs.devices.notify_remote_device_update(update.user_id, [update.device.device_id])

    async def _on_signing_key_update(self, origin: str, content: dict[str, Any]) -> None:
        user_id: Any = content.get("user_id")
        if not self._is_from(origin, user_id):
            return
        if not await self._shares_room(user_id):
            return
        cache = self.hs.remote_device_lists
        if cache is not None:
            await cache.on_signing_key_update(user_id, content)
        await self.hs.devices.notify_remote_device_update(user_id, [])

    async def _shares_room(self, user_id: str) -> bool:
        cache = self.hs.remote_device_lists
        if cache is not None:
            return bool(await cache.shares_room(user_id))
        return bool(await self.hs.stores.members.get_rooms_for_user(user_id))
