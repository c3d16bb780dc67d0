"""RemoteDeviceListStore: the cached device lists of remote users.

Client-server API "Tracking the device list for a user" (servers track the
device lists of users who share a room with their users) and server-server
API "Device Management". A tracked user has one ``device_lists_remote_users``
row (the owning server's ``stream_id`` the cache is at, a ``stale`` flag,
the user's master and self-signing keys) and one ``device_lists_remote_cache``
row per device. The handler (``atrium.handlers.remote_device_lists``) decides
what to write; this module only holds the SQL.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

import attrs

from atrium.storage.database import DatabasePool, Transaction


@attrs.frozen
class RemoteDevice:
    """One device of a remote user: its signed keys (None before any upload) and name."""

    device_id: str
    keys: Mapping[str, Any] | None
    display_name: str | None


@attrs.frozen
class TrackedUser:
    user_id: str
    stream_id: int
    stale: bool


@attrs.frozen
class CachedKeys:
    """What /keys/query needs of tracked users."""

    device_keys: dict[str, dict[str, dict[str, Any]]]
    master_keys: dict[str, dict[str, Any]]
    self_signing_keys: dict[str, dict[str, Any]]


def _dump(obj: Mapping[str, Any] | None) -> str | None:
    return None if obj is None else json.dumps(obj, sort_keys=True)


class RemoteDeviceListStore:
    def __init__(self, db: DatabasePool) -> None:
        self.db = db

    # -- reads ----------------------------------------------------------------------
    async def get_tracked(self, user_ids: Collection[str]) -> dict[str, TrackedUser]:
        """The tracking rows (fresh or stale) of those users that have one."""
        if not user_ids:
            return {}

        def txn_fn(txn: Transaction) -> list[tuple[Any, ...]]:
            return txn.select_many(
                "SELECT user_id, stream_id, stale FROM device_lists_remote_users WHERE {in}",
                "user_id",
                set(user_ids),
            )

        rows = await self.db.run_interaction("get_tracked_remote_users", txn_fn)
        return {r[0]: TrackedUser(r[0], int(r[1]), bool(r[2])) for r in rows}

    async def get_cached_keys(self, query: Mapping[str, Collection[str]]) -> CachedKeys:
        """Keys of tracked users as /keys/query shows them. ``query`` maps user
        IDs to device IDs (empty: every device); devices without keys are left out."""

        def txn_fn(txn: Transaction) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
            devices = txn.select_many(
                "SELECT user_id, device_id, keys_json, display_name"
                " FROM device_lists_remote_cache WHERE {in} AND keys_json IS NOT NULL",
                "user_id",
                set(query),
            )
            users = txn.select_many(
                "SELECT user_id, master_key, self_signing_key"
                " FROM device_lists_remote_users WHERE {in}",
                "user_id",
                set(query),
            )
            return devices, users

        devices, users = await self.db.run_interaction("get_cached_remote_keys", txn_fn)
        result = CachedKeys({u: {} for u in query}, {}, {})
        for user_id, device_id, keys_json, display_name in devices:
            wanted = query.get(user_id)
            if wanted and device_id not in wanted:
                continue
            keys = json.loads(keys_json)
            if display_name is not None:
                keys.setdefault("unsigned", {})["device_display_name"] = display_name
            result.device_keys[user_id][device_id] = keys
        for user_id, master, self_signing in users:
            if master is not None:
                result.master_keys[user_id] = json.loads(master)
            if self_signing is not None:
                result.self_signing_keys[user_id] = json.loads(self_signing)
        return result

    # -- writes -----------------------------------------------------------------------
    async def replace_device_list(
        self,
        user_id: str,
        stream_id: int,
        devices: Collection[RemoteDevice],
        master_key: Mapping[str, Any] | None,
        self_signing_key: Mapping[str, Any] | None,
        ts: int,
    ) -> None:
        """A full resync (``/user/devices``): the cache becomes exactly this, fresh."""

        def txn_fn(txn: Transaction) -> None:
            txn.execute("DELETE FROM device_lists_remote_cache WHERE user_id = ?", (user_id,))
            txn.insert_many(
                "device_lists_remote_cache",
                ("user_id", "device_id", "keys_json", "display_name"),
                [(user_id, d.device_id, _dump(d.keys), d.display_name) for d in devices],
            )
            txn.upsert(
                "device_lists_remote_users",
                {"user_id": user_id},
                {
                    "stream_id": stream_id,
                    "stale": False,
                    "master_key": _dump(master_key),
                    "self_signing_key": _dump(self_signing_key),
                    "ts": ts,
                },
            )

        await self.db.run_interaction("replace_remote_device_list", txn_fn)

    async def apply_device_update(
        self, user_id: str, stream_id: int, device: RemoteDevice, deleted: bool
    ) -> None:
        """One m.device_list_update: the device is replaced (or removed) and the
        cache moves to ``stream_id`` (never backwards)."""

        def txn_fn(txn: Transaction) -> None:
            txn.execute(
                "DELETE FROM device_lists_remote_cache WHERE user_id = ? AND device_id = ?",
                (user_id, device.device_id),
            )
            if not deleted:
                txn.execute(
                    "INSERT INTO device_lists_remote_cache"
                    " (user_id, device_id, keys_json, display_name) VALUES (?, ?, ?, ?)",
                    (user_id, device.device_id, _dump(device.keys), device.display_name),
                )
            txn.execute(
                "UPDATE device_lists_remote_users SET stream_id = ?"
                " WHERE user_id = ? AND stream_id < ?",
                (stream_id, user_id, stream_id),
            )

        await self.db.run_interaction("apply_remote_device_update", txn_fn)

    async def set_cross_signing_keys(
        self,
        user_id: str,
        master_key: Mapping[str, Any] | None,
        self_signing_key: Mapping[str, Any] | None,
    ) -> None:
        """m.signing_key_update: replace the keys it carries (None: unchanged)."""
        values = {}
        if master_key is not None:
            values["master_key"] = _dump(master_key)
        if self_signing_key is not None:
            values["self_signing_key"] = _dump(self_signing_key)
        if not values:
            return
        sets = ", ".join(f"{c} = ?" for c in values)
        await self.db.execute(
            "set_remote_cross_signing_keys",
            f"UPDATE device_lists_remote_users SET {sets} WHERE user_id = ?",
            *values.values(),
            user_id,
        )

    async def mark_stale(self, user_ids: Collection[str]) -> None:
        """Stop serving these users' caches (we no longer hear of their changes)."""
        if not user_ids:
            return

        def txn_fn(txn: Transaction) -> None:
            txn.executemany(
                "UPDATE device_lists_remote_users SET stale = TRUE WHERE user_id = ?",
                [(u,) for u in sorted(set(user_ids))],
            )

        await self.db.run_interaction("mark_remote_device_lists_stale", txn_fn)

    async def get_fresh_users(self) -> list[str]:
        """Every tracked user whose cache is served (for the stop-tracking sweep)."""
        rows = await self.db.execute(
            "get_fresh_remote_users",
            "SELECT user_id FROM device_lists_remote_users WHERE stale = FALSE",
        )
        return [r[0] for r in rows]
