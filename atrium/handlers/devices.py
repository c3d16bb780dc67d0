"""Devices: deleting them (with their tokens, keys and inbox) and device-list changes.

Every change of a user's devices — a device added at login or registration,
renamed, deleted, new identity keys, new cross-signing keys — becomes one
position of the device_lists stream (``notify_device_update``), so users
sharing a room with them see it in /sync ``device_lists.changed`` and, once
federation exists, remote servers get an ``m.device_list_update``.

``get_device_list_changes`` answers "whose device lists must this user
re-fetch between two tokens" for /sync and ``GET /keys/changes``
(client-server API "Tracking the device list for a user").

Writes to the device_lists stream are serialised here: a position is
allocated, written and published before the next one is allocated, so the
published token never passes a write still in flight and every published
batch wakes its own listeners.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import attrs

from atrium.replication.publisher import StreamPublisher
from atrium.replication.streams.device_lists import DeviceListsStreamRow
from atrium.storage.stores.accounts import AccountStore
from atrium.storage.stores.device_lists import DeviceListStore
from atrium.storage.stores.e2e_keys import E2eKeysStore
from atrium.storage.stores.roommember import RoomMemberStore
from atrium.storage.stores.to_device import ToDeviceStore
from atrium.sync.token import StreamToken
from atrium.util.async_helpers import Linearizer


@attrs.frozen
class DeviceListChanges:
    """Users whose devices to re-fetch (``changed``) and to stop tracking (``left``)."""

    changed: frozenset[str]
    left: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.changed or self.left)


class DeviceHandler:
    def __init__(
        self,
        accounts: AccountStore,
        *,
        device_lists: DeviceListStore,
        e2e_keys: E2eKeysStore,
        to_device: ToDeviceStore,
        members: RoomMemberStore,
        publisher: StreamPublisher,
        clock: Any,
        server_name: str,
        events_position: int = 0,
    ) -> None:
        self.accounts = accounts
        self.device_lists = device_lists
        self.e2e_keys = e2e_keys
        self.to_device = to_device
        self.members = members
        self.publisher = publisher
        self.clock = clock
        self.server_name = server_name
        self._write_lock = Linearizer("device_lists_writer")
        # The membership-change gate (see ``on_new_data``): the events
        # position of the latest membership change this process applied (no
        # earlier than where it started), and whether one is being applied.
        self._last_membership_change = events_position
        self._membership_pending = False

    # -- device changes ------------------------------------------------------------
    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        """Delete devices with their access tokens, keys and pending to-device messages."""
        if not device_ids:
            return
        await self.accounts.delete_devices(user_id, device_ids)
        await self.e2e_keys.delete_device_keys(user_id, device_ids)
        await self.to_device.delete_devices(user_id, device_ids)
        await self.notify_device_update(user_id, device_ids)

    async def notify_device_added(self, user_id: str, device_id: str) -> None:
        """A new device (login or registration): hooked into AuthHandler.login."""
        await self.notify_device_update(user_id, [device_id])

    async def notify_device_update(self, user_id: str, device_ids: Collection[str]) -> None:
        """Record and publish a change of ``user_id``'s devices."""
        hosts = await self._remote_hosts_sharing_rooms(user_id)
        rows = [DeviceListsStreamRow(user_id)] + [DeviceListsStreamRow(h) for h in sorted(hosts)]
        async with self._write_lock.queue(()):
            await self.device_lists.add_device_change(
                user_id, device_ids, hosts, self.clock.time_msec()
            )
            await self.publisher.publish(
                "device_lists", self.device_lists.get_device_stream_token(), rows
            )

    async def notify_remote_device_update(self, user_id: str, device_ids: Collection[str]) -> None:
        """A remote user's devices changed (m.device_list_update, wt/fed): local
        users sharing a room with them see it in /sync; no server is poked."""
        async with self._write_lock.queue(()):
            await self.device_lists.add_device_change(
                user_id, device_ids, (), self.clock.time_msec()
            )
            await self.publisher.publish(
                "device_lists",
                self.device_lists.get_device_stream_token(),
                [DeviceListsStreamRow(user_id)],
            )

    async def notify_user_signature_update(
        self, from_user_id: str, user_ids: Collection[str]
    ) -> None:
        """``from_user_id`` signed the keys of ``user_ids``: their own devices re-query them."""
        async with self._write_lock.queue(()):
            await self.device_lists.add_user_signature_change(from_user_id, user_ids)
            await self.publisher.publish(
                "device_lists",
                self.device_lists.get_device_stream_token(),
                [DeviceListsStreamRow(from_user_id)],
            )

    async def _remote_hosts_sharing_rooms(self, user_id: str) -> set[str]:
        hosts: set[str] = set()
        for room_id in await self.members.get_rooms_for_user(user_id):
            for member in await self.members.get_users_in_room(room_id):
                hosts.add(member.split(":", 1)[-1])
        hosts.discard(self.server_name)
        return hosts

    # -- the membership-change gate -------------------------------------------------------
    # Most incremental syncs follow messages, not joins or leaves; the gate
    # lets them skip the membership-delta query. The composition root
    # registers ``note_membership_invalidation`` for the membership caches
    # (invalidated before the position advances, even for state resets) and
    # ``on_new_data`` as a notifier observer (after it advanced).
    def note_membership_invalidation(self, *_: Any) -> None:
        self._membership_pending = True

    def on_new_data(self, stream: str, token: Any, users: Any, rooms: Any) -> None:
        if stream != "events" or not (users or self._membership_pending):
            return
        if isinstance(token, int):
            self._last_membership_change = max(self._last_membership_change, token)
            self._membership_pending = False
        # Any other token shape keeps the gate open (pending): always correct.

    def _membership_may_have_changed(self, since: StreamToken) -> bool:
        return self._membership_pending or since.events.stream < self._last_membership_change

    # -- who changed -------------------------------------------------------------------
    async def get_device_list_changes(
        self, user_id: str, since: StreamToken, now: StreamToken
    ) -> DeviceListChanges:
        """Device-list news for ``user_id`` between two tokens.

        ``changed``: users sharing a room with ``user_id`` (and ``user_id``
        itself) whose devices changed in (since, now], users whose keys
        ``user_id`` signed, and users who newly share a room with
        ``user_id`` because either side joined (spec, /sync "DeviceLists":
        "or who now share an encrypted room with the client"; the note there
        allows reporting every newly shared room). ``left``: users who
        stopped sharing a room with ``user_id`` in the range and share none now.
        """
        my_rooms = await self.members.get_rooms_for_user(user_id)
        changed: set[str] = set()
        newly_shared: set[str] = set()
        maybe_left: set[str] = set()

        changed_devices = await self.device_lists.get_users_whose_devices_changed(
            since.device_lists, now.device_lists
        )
        signed = await self.device_lists.get_users_whose_signatures_changed(
            user_id, since.device_lists, now.device_lists
        )
        changed |= signed

        deltas = []
        if self._membership_may_have_changed(since):
            deltas = await self.device_lists.get_membership_deltas(
                user_id, my_rooms, since.events.stream, now.events.max_position
            )
        for delta in deltas:
            joined = delta.membership == "join" and delta.prev_membership != "join"
            parted = delta.prev_membership == "join" and delta.membership != "join"
            if delta.user_id == user_id:
                if joined or parted:
                    room_members = await self.members.get_users_in_room(delta.room_id)
                    (newly_shared if joined else maybe_left).update(room_members)
            elif joined:
                newly_shared.add(delta.user_id)
            elif parted:
                maybe_left.add(delta.user_id)

        newly_shared.discard(user_id)
        maybe_left.discard(user_id)
        if changed_devices or newly_shared or maybe_left:
            sharing = {user_id}
            for room_id in my_rooms:
                sharing |= await self.members.get_users_in_room(room_id)
            changed |= (changed_devices | newly_shared) & sharing
            left = maybe_left - sharing
        else:
            left = set()
        changed -= left
        return DeviceListChanges(frozenset(changed), frozenset(left))
