"""The cache of remote users' device lists.

Client-server API "Tracking the device list for a user" says a server keeps
the device lists of the users who share a room with its users; the
server-server API "Device Management" says how: ``GET /user/devices/{userId}``
gives the whole list with the owning server's ``stream_id``, and each later
change arrives as an ``m.device_list_update`` EDU carrying its own
``stream_id`` and the ``prev_id`` of the update(s) before it.

- ``keys_for_query``: /keys/query for remote users. A user who shares a room
  with one of our users is served from the cache, which is filled with
  ``/user/devices`` on the first query (or when it was stale); users we do
  not share a room with are left to be forwarded to their server.
- ``on_device_list_update``: an update for a tracked user is applied when
  every ``prev_id`` is at or below the cache's ``stream_id`` (we hold what it
  follows: updates from one server arrive in order, and a resync covers
  everything up to its stream_id). An empty ``prev_id`` (the sender says it
  never told us before) or an unknown one (a gap: we missed updates) makes
  us fetch the whole list again. An update older than the cache is dropped.
- ``on_signing_key_update``: replaces the cached master / self-signing key.
- Stop tracking: when we no longer share a room with a tracked user, their
  updates stop reaching us, so the cache is marked stale (not served,
  fetched again when next needed). This is checked at query time, when an
  update arrives, and after membership changes (``note_membership_change``
  + ``on_new_data`` on the process that runs it).

Malformed updates (``parse_device_list_update`` says None) are ignored by the
caller with nothing stored.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any, TypeGuard
from urllib.parse import quote

import attrs
from twisted.internet import defer

from atrium.handlers.e2e_keys import clean_str
from atrium.storage.stores.remote_device_lists import (
    CachedKeys,
    RemoteDevice,
    RemoteDeviceListStore,
)
from atrium.util.async_helpers import Linearizer

logger = logging.getLogger(__name__)

FED_V1 = "/_matrix/federation/v1"
# Bound on the devices of one /user/devices answer we store.
MAX_DEVICES = 1000


def server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1]


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@attrs.frozen
class DeviceListUpdate:
    """A well-formed m.device_list_update EDU's content."""

    user_id: str
    device: RemoteDevice
    stream_id: int
    prev_ids: tuple[int, ...]
    deleted: bool


def _device_keys(value: Any, user_id: str, device_id: str) -> dict[str, Any] | None | bool:
    """A device's keys object if it is about that device; None if absent; False if bad."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return False
    if value.get("user_id") != user_id or value.get("device_id") != device_id:
        return False
    keys = dict(value)
    keys.pop("unsigned", None)
    return keys


def parse_device_list_update(content: Mapping[str, Any]) -> DeviceListUpdate | None:
    """The update, or None when the EDU is malformed (spec "m.device_list_update")."""
    user_id, device_id = content.get("user_id"), content.get("device_id")
    stream_id, prev_ids = content.get("stream_id"), content.get("prev_id", [])
    deleted = content.get("deleted", False)
    name = content.get("device_display_name")
    if not isinstance(user_id, str) or not isinstance(device_id, str) or not clean_str(device_id):
        return None
    if not _is_int(stream_id):
        return None
    if not isinstance(prev_ids, list) or not all(_is_int(p) for p in prev_ids):
        return None
    if not isinstance(deleted, bool) or (name is not None and not isinstance(name, str)):
        return None
    keys = _device_keys(content.get("keys"), user_id, device_id)
    if keys is False:
        return None
    assert not isinstance(keys, bool)
    return DeviceListUpdate(
        user_id, RemoteDevice(device_id, keys, name), stream_id, tuple(prev_ids), deleted
    )


def _cross_signing_key(value: Any, user_id: str, usage: str) -> dict[str, Any] | None:
    if (
        isinstance(value, dict)
        and value.get("user_id") == user_id
        and isinstance(value.get("keys"), dict)
        and isinstance(value.get("usage"), list)
        and usage in value["usage"]
    ):
        return value
    return None


class RemoteDeviceLists:
    def __init__(
        self,
        *,
        store: RemoteDeviceListStore,
        members: Any,
        devices: Any,
        client: Any,
        clock: Any,
        server_name: str,
    ) -> None:
        self.store = store
        self.members = members
        # DeviceHandler: local clients hear of changes through the device_lists stream.
        self.devices = devices
        self.client = client
        self.clock = clock
        self.server_name = server_name
        # One resync or update at a time per user (EDUs and queries race).
        self._user_lock = Linearizer("remote_device_list")
        self._membership_changed = False
        self._sweep_run: defer.Deferred[None] | None = None
        self._stopped = False

    async def shares_room(self, user_id: str) -> bool:
        """Whether ``user_id`` is joined to a room one of our users is joined to."""
        for room_id in await self.members.get_rooms_for_user(user_id):
            if await self.members.is_host_joined(room_id, self.server_name):
                return True
        return False

    # -- /keys/query ------------------------------------------------------------------
    async def keys_for_query(
        self, wanted: Mapping[str, Collection[str]], timeout: float
    ) -> tuple[CachedKeys, dict[str, list[str]]]:
        """(keys served from the cache, the users left to forward to their servers)."""
        tracked = await self.store.get_tracked(wanted)
        served: dict[str, Collection[str]] = {}
        forward: dict[str, list[str]] = {}
        to_fetch: list[str] = []
        no_longer_shared: list[str] = []
        for user_id, device_ids in wanted.items():
            entry = tracked.get(user_id)
            if not await self.shares_room(user_id):
                forward[user_id] = list(device_ids)
                if entry is not None and not entry.stale:
                    no_longer_shared.append(user_id)
            elif entry is not None and not entry.stale:
                served[user_id] = device_ids
            else:
                to_fetch.append(user_id)
        await self.store.mark_stale(no_longer_shared)

        async def fetch(user_id: str) -> None:
            if await self.resync(user_id, timeout=timeout):
                served[user_id] = wanted[user_id]
            else:
                forward[user_id] = list(wanted[user_id])

        await defer.DeferredList(
            [defer.ensureDeferred(fetch(u)) for u in to_fetch], consumeErrors=True
        )
        return await self.store.get_cached_keys(served), forward

    # -- resync -------------------------------------------------------------------------
    async def resync(self, user_id: str, at_least: int = 0, timeout: float | None = None) -> bool:
        """Fetch the whole list with /user/devices; False when the server gave none."""
        async with self._user_lock.queue(user_id):
            return await self._resync(user_id, at_least, timeout)

    async def _resync(self, user_id: str, at_least: int, timeout: float | None) -> bool:
        options = {} if timeout is None else {"timeout": timeout}
        try:
            answer = await self.client.get_json(
                server_of(user_id), f"{FED_V1}/user/devices/{quote(user_id, safe='')}", **options
            )
        except Exception as e:
            logger.info("Fetching the device list of %s failed: %s", user_id, e)
            return False
        parsed = self._parse_user_devices(user_id, answer)
        if parsed is None:
            logger.info("Ignoring a malformed /user/devices answer about %s", user_id)
            return False
        stream_id, devices, master, self_signing = parsed
        # The answer reflects at least the update that made us ask (the
        # sender's stream_id of an update need not be one /user/devices reports).
        await self.store.replace_device_list(
            user_id, max(stream_id, at_least), devices, master, self_signing, self.clock.time_msec()
        )
        return True

    @staticmethod
    def _parse_user_devices(
        user_id: str, answer: Any
    ) -> tuple[int, list[RemoteDevice], dict[str, Any] | None, dict[str, Any] | None] | None:
        """server-server "GET /user/devices/{userId}": only what is about ``user_id``."""
        if not isinstance(answer, dict) or answer.get("user_id") != user_id:
            return None
        stream_id, entries = answer.get("stream_id"), answer.get("devices")
        if not _is_int(stream_id) or not isinstance(entries, list):
            return None
        devices: dict[str, RemoteDevice] = {}
        for entry in entries[:MAX_DEVICES]:
            if not isinstance(entry, dict) or not clean_str(entry.get("device_id")):
                continue
            device_id = entry["device_id"]
            keys = _device_keys(entry.get("keys"), user_id, device_id)
            name = entry.get("device_display_name")
            devices[device_id] = RemoteDevice(
                device_id,
                keys if isinstance(keys, dict) else None,
                name if isinstance(name, str) else None,
            )
        master = _cross_signing_key(answer.get("master_key"), user_id, "master")
        self_signing = _cross_signing_key(answer.get("self_signing_key"), user_id, "self_signing")
        return stream_id, list(devices.values()), master, self_signing

    # -- EDUs ------------------------------------------------------------------------------
    async def on_device_list_update(self, update: DeviceListUpdate) -> None:
        """Apply an update of a user sharing a room with us (see the module doc)."""
        user_id = update.user_id
        async with self._user_lock.queue(user_id):
            entry = (await self.store.get_tracked([user_id])).get(user_id)
            if entry is None or entry.stale:
                return  # not tracked: clients are told to query, which fetches it
            if update.stream_id < entry.stream_id or (
                update.stream_id == entry.stream_id and not update.prev_ids
            ):
                # Covered by what we hold. (Several devices changed together
                # may share one stream_id, each EDU naming it as prev_id.)
                return
            if update.prev_ids and all(p <= entry.stream_id for p in update.prev_ids):
                await self.store.apply_device_update(
                    user_id, update.stream_id, update.device, update.deleted
                )
                return
            logger.info(
                "Device list of %s: prev_id %s after %d, resyncing",
                user_id,
                list(update.prev_ids),
                entry.stream_id,
            )
            if not await self._resync(user_id, update.stream_id, None):
                # We may have missed changes: do not serve what we hold.
                await self.store.mark_stale([user_id])

    async def on_signing_key_update(self, user_id: str, content: Mapping[str, Any]) -> None:
        """m.signing_key_update: new master / self-signing keys of a tracked user."""
        master = _cross_signing_key(content.get("master_key"), user_id, "master")
        self_signing = _cross_signing_key(content.get("self_signing_key"), user_id, "self_signing")
        async with self._user_lock.queue(user_id):
            entry = (await self.store.get_tracked([user_id])).get(user_id)
            if entry is not None and not entry.stale:
                await self.store.set_cross_signing_keys(user_id, master, self_signing)

    async def stop_tracking(self, user_id: str) -> None:
        await self.store.mark_stale([user_id])

    # -- stop tracking after membership changes ----------------------------------------------
    # Registered (by the composition root, on the federation sender's
    # instance) for the membership caches' invalidation and as a notifier
    # observer: after the events position advanced past a membership change,
    # tracked users who no longer share a room with us are marked stale.
    def note_membership_change(self, *_: Any) -> None:
        self._membership_changed = True

    def on_new_data(self, stream: str, token: Any, users: Any, rooms: Any) -> None:
        if stream != "events" or not self._membership_changed:
            return
        if self._sweep_run is not None or self._stopped:
            return
        d = defer.ensureDeferred(self._sweep())
        d.addErrback(lambda f: logger.error("Device-list tracking sweep failed: %s", f))
        if not d.called:
            self._sweep_run = d

    async def _sweep(self) -> None:
        try:
            while self._membership_changed and not self._stopped:
                self._membership_changed = False
                fresh = await self.store.get_fresh_users()
                gone = [u for u in fresh if not await self.shares_room(u)]
                if gone:
                    logger.info("No longer sharing a room with %d tracked user(s)", len(gone))
                    await self.store.mark_stale(gone)
        finally:
            self._sweep_run = None

    # A service of the composition root, so that shutdown waits for a sweep
    # in progress before the database closes.
    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self._stopped = True
        if self._sweep_run is not None:
            await self._sweep_run
