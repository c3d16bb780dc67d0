"""Devices: deleting them (with their tokens) and announcing changes.

Device-list changes feed the device_lists stream so other users' /sync
(and, with federation, other servers) learn that a user's devices changed.
"""

from __future__ import annotations

from typing import Any

from atrium.storage.stores.accounts import AccountStore


class DeviceHandler:
    def __init__(self, accounts: AccountStore, on_device_change: Any = None) -> None:
        self.accounts = accounts
        # Called with (user_id, device_ids) after a change; wired to the
        # device-list stream by the composition root.
        self._on_device_change = on_device_change

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        if not device_ids:
            return
        await self.accounts.delete_devices(user_id, device_ids)
        await self.notify_device_update(user_id, device_ids)

    async def notify_device_update(self, user_id: str, device_ids: list[str]) -> None:
        if self._on_device_change is not None:
            await self._on_device_change(user_id, device_ids)
