"""The end-to-end encryption parts of /sync: to-device messages, device lists, key counts.

Spec: client-server API "Send-to-Device messaging" ("Extensions to /sync")
and "End-to-End Encryption" ("Extensions to /sync").

- ``ToDeviceSection``: ``to_device.events`` for the syncing device, oldest
  first, at most ``limit`` per response. A /sync whose ``since`` reaches a
  message's position acknowledges it, so messages at or below
  ``since.to_device`` are deleted first (at-least-once delivery: a response
  that was lost is delivered again, since its token was never used).
- ``DeviceListsSection``: ``device_lists.changed`` / ``left`` on incremental
  syncs (the spec only requires them there).
- ``KeyCountsSection``: ``device_one_time_keys_count`` and
  ``device_unused_fallback_key_types``.
"""

from __future__ import annotations

from typing import Any

from atrium.handlers.devices import DeviceHandler
from atrium.handlers.e2e_keys import E2eKeysHandler
from atrium.storage.stores.to_device import ToDeviceStore
from atrium.sync.sections import SyncRequest

# The spec's recommended cap on to-device messages per /sync response.
TO_DEVICE_LIMIT = 100
# Devices whose acknowledged position ToDeviceSection remembers.
ACKED_MEMO_SIZE = 100_000

# Keys KeyCountsSection adds; they do not make a response worth returning.
KEY_COUNT_KEYS = ("device_one_time_keys_count", "device_unused_fallback_key_types")


class ToDeviceSection:
    def __init__(self, store: ToDeviceStore, limit: int = TO_DEVICE_LIMIT) -> None:
        self.store = store
        self.limit = limit
        # (user, device) -> the position up to which this process already
        # deleted acknowledged messages, so a long-poll re-checking the same
        # `since` does not issue the same DELETE again. Bounded: forgetting
        # only costs one redundant DELETE.
        self._acked: dict[tuple[str, str], int] = {}

    async def _acknowledge(self, user_id: str, device_id: str, since: int) -> None:
        key = (user_id, device_id)
        if since <= self._acked.get(key, 0):
            return
        await self.store.delete_messages_for_device(user_id, device_id, since)
        if len(self._acked) >= ACKED_MEMO_SIZE:
            self._acked.clear()
        self._acked[key] = since

    async def fill(self, request: SyncRequest, response: dict[str, Any]) -> None:
        since = request.since_key("to_device")
        if since > 0:
            await self._acknowledge(request.user_id, request.device_id, since)
        now = int(request.now.to_device)
        if now <= since:
            return
        messages, upto = await self.store.get_messages_for_device(
            request.user_id, request.device_id, since, now, self.limit
        )
        if messages:
            response.setdefault("to_device", {}).setdefault("events", []).extend(messages)
        if upto < now:
            # More are waiting: next_batch must stop after the last message
            # sent, or the next /sync would acknowledge (delete) the rest
            # unseen. The sync handler builds next_batch from request.now
            # after every section has run.
            request.now = request.now.copy_and_replace("to_device", upto)


class DeviceListsSection:
    def __init__(self, devices: DeviceHandler) -> None:
        self.devices = devices

    async def fill(self, request: SyncRequest, response: dict[str, Any]) -> None:
        if request.since is None:
            return
        changes = await self.devices.get_device_list_changes(
            request.user_id, request.since, request.now
        )
        if changes:
            response["device_lists"] = {
                "changed": sorted(changes.changed),
                "left": sorted(changes.left),
            }


def has_content(response: dict[str, Any]) -> bool:
    """Whether a /sync response carries anything besides the key counts."""
    for key, value in response.items():
        if key in KEY_COUNT_KEYS or key == "next_batch":
            continue
        if key == "rooms" and isinstance(value, dict):
            if any(value.values()):
                return True
        elif value:
            return True
    return False


class KeyCountsSection:
    """Adds the device's key counts to responses that are being returned anyway.

    The counts are always "current", so adding them to every response would
    make every incremental sync non-empty and end every long-poll at once.
    They are added on initial syncs and whenever the response already has
    content, so this section must run after every other section. A device
    whose keys get claimed learns the new count with the to-device
    messages that claimers send it.
    """

    def __init__(self, keys: E2eKeysHandler) -> None:
        self.keys = keys

    async def fill(self, request: SyncRequest, response: dict[str, Any]) -> None:
        if request.since is not None and not has_content(response):
            return
        counts, unused = await self.keys.get_key_counts(request.user_id, request.device_id)
        # Reporting 0 explicitly stops clients that treat a missing count as
        # "unknown" from waiting instead of uploading keys.
        counts.setdefault("signed_curve25519", 0)
        response["device_one_time_keys_count"] = counts
        response["device_unused_fallback_key_types"] = unused
