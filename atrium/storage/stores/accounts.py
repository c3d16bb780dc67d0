"""Local accounts: users, devices, access tokens and profiles."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import attrs

from atrium.storage.database import DatabasePool, Transaction
from atrium.storage.stores.invalidation import CacheInvalidator
from atrium.util.caches.descriptors import cached


@attrs.frozen
class UserInfo:
    user_id: str
    password_hash: str | None
    creation_ts: int
    admin: bool
    deactivated: bool


@attrs.frozen
class TokenLookup:
    """Who an access token belongs to."""

    user_id: str
    device_id: str
    token_id: int


@attrs.frozen
class Device:
    user_id: str
    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AccountStore:
    """Users, devices, tokens, profiles: everything owned by one local account."""

    def __init__(self, db: DatabasePool, invalidator: CacheInvalidator) -> None:
        self.db = db
        self.invalidator = invalidator

    # -- users -----------------------------------------------------------------
    async def register_user(
        self, user_id: str, password_hash: str | None, creation_ts: int, admin: bool = False
    ) -> bool:
        """Create a user; False if the ID is taken."""

        def txn_fn(txn: Transaction) -> bool:
            if txn.select_one("SELECT 1 FROM users WHERE user_id = ?", (user_id,)):
                return False
            txn.execute(
                "INSERT INTO users (user_id, password_hash, creation_ts, admin, deactivated) VALUES (?, ?, ?, ?, FALSE)",
                (user_id, password_hash, creation_ts, admin),
            )
            txn.upsert(
                "profiles", {"user_id": user_id}, {"displayname": user_id[1:].split(":", 1)[0]}
            )
            txn.call_after(self.invalidator.invalidate, "get_user", [(user_id,)])
            return True

        return await self.db.run_interaction("register_user", txn_fn)

    @cached(max_entries=10000)
    async def get_user(self, user_id: str) -> UserInfo | None:
        rows = await self.db.execute(
            "get_user",
            "SELECT user_id, password_hash, creation_ts, admin, deactivated FROM users WHERE user_id = ?",
            user_id,
        )
        if not rows:
            return None
        r = rows[0]
        return UserInfo(r[0], r[1], int(r[2]), bool(r[3]), bool(r[4]))

    async def set_password_hash(self, user_id: str, password_hash: str | None) -> None:
        def txn_fn(txn: Transaction) -> None:
            txn.execute(
                "UPDATE users SET password_hash = ? WHERE user_id = ?", (password_hash, user_id)
            )
            txn.call_after(self.invalidator.invalidate, "get_user", [(user_id,)])

        await self.db.run_interaction("set_password_hash", txn_fn)

    async def set_deactivated(self, user_id: str, deactivated: bool) -> None:
        def txn_fn(txn: Transaction) -> None:
            txn.execute(
                "UPDATE users SET deactivated = ? WHERE user_id = ?", (deactivated, user_id)
            )
            txn.call_after(self.invalidator.invalidate, "get_user", [(user_id,)])

        await self.db.run_interaction("set_deactivated", txn_fn)

    async def set_admin(self, user_id: str, admin: bool) -> None:
        def txn_fn(txn: Transaction) -> None:
            txn.execute("UPDATE users SET admin = ? WHERE user_id = ?", (admin, user_id))
            txn.call_after(self.invalidator.invalidate, "get_user", [(user_id,)])

        await self.db.run_interaction("set_admin", txn_fn)

    async def list_users(self, offset: int = 0, limit: int = 100) -> tuple[list[UserInfo], int]:
        def txn_fn(txn: Transaction) -> tuple[list[UserInfo], int]:
            total_row = txn.select_one("SELECT COUNT(*) FROM users")
            rows = txn.select_all(
                "SELECT user_id, password_hash, creation_ts, admin, deactivated FROM users"
                " ORDER BY user_id LIMIT ? OFFSET ?",
                (limit, offset),
            )
            users = [UserInfo(r[0], r[1], int(r[2]), bool(r[3]), bool(r[4])) for r in rows]
            return users, int(total_row[0]) if total_row else 0

        return await self.db.run_interaction("list_users", txn_fn)

    # -- devices -----------------------------------------------------------------
    async def store_device(self, user_id: str, device_id: str, display_name: str | None) -> bool:
        """Create the device if new (True), leave an existing one alone (False)."""

        def txn_fn(txn: Transaction) -> bool:
            if txn.select_one(
                "SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
            ):
                return False
            txn.execute(
                "INSERT INTO devices (user_id, device_id, display_name) VALUES (?, ?, ?)",
                (user_id, device_id, display_name),
            )
            return True

        return await self.db.run_interaction("store_device", txn_fn)

    async def get_devices(self, user_id: str) -> dict[str, Device]:
        rows = await self.db.execute(
            "get_devices",
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = ?",
            user_id,
        )
        return {r[1]: Device(*r) for r in rows}

    async def get_device(self, user_id: str, device_id: str) -> Device | None:
        return (await self.get_devices(user_id)).get(device_id)

    async def update_device(self, user_id: str, device_id: str, display_name: str | None) -> bool:
        def txn_fn(txn: Transaction) -> bool:
            txn.execute(
                "UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?",
                (display_name, user_id, device_id),
            )
            return txn.rowcount > 0

        return await self.db.run_interaction("update_device", txn_fn)

    async def update_device_last_seen(
        self, user_id: str, device_id: str, ts: int, ip: str | None
    ) -> None:
        await self.db.execute(
            "update_device_last_seen",
            "UPDATE devices SET last_seen_ts = ?, last_seen_ip = ? WHERE user_id = ? AND device_id = ?",
            ts,
            ip,
            user_id,
            device_id,
        )

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        """Delete devices and every access token of them."""

        def txn_fn(txn: Transaction) -> None:
            for device_id in device_ids:
                self._delete_tokens_txn(txn, user_id, device_id)
                txn.execute(
                    "DELETE FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
                )

        await self.db.run_interaction("delete_devices", txn_fn)

    # -- access tokens -----------------------------------------------------------
    async def add_access_token(
        self, user_id: str, device_id: str, token: str, created_ts: int
    ) -> int:
        token_id = secrets.randbits(52)
        await self.db.execute(
            "add_access_token",
            "INSERT INTO access_tokens (id, token_hash, user_id, device_id, created_ts) VALUES (?, ?, ?, ?, ?)",
            token_id,
            hash_token(token),
            user_id,
            device_id,
            created_ts,
        )
        return token_id

    async def get_user_by_access_token(self, token: str) -> TokenLookup | None:
        return await self._lookup_token_hash(hash_token(token))

    @cached(max_entries=50000)
    async def _lookup_token_hash(self, token_hash: str) -> TokenLookup | None:
        rows = await self.db.execute(
            "get_user_by_access_token",
            "SELECT user_id, device_id, id FROM access_tokens WHERE token_hash = ?",
            token_hash,
        )
        return TokenLookup(rows[0][0], rows[0][1], int(rows[0][2])) if rows else None

    def _delete_tokens_txn(
        self,
        txn: Transaction,
        user_id: str,
        device_id: str | None,
        except_token_id: int | None = None,
    ) -> None:
        sql = "SELECT token_hash, id FROM access_tokens WHERE user_id = ?"
        args: list[Any] = [user_id]
        if device_id is not None:
            sql += " AND device_id = ?"
            args.append(device_id)
        rows = [r for r in txn.select_all(sql, args) if r[1] != except_token_id]
        for token_hash, token_id in rows:
            txn.execute("DELETE FROM access_tokens WHERE id = ?", (token_id,))
            txn.call_after(self.invalidator.invalidate, "_lookup_token_hash", [(token_hash,)])

    async def delete_access_token(self, token: str) -> None:
        token_hash = hash_token(token)

        def txn_fn(txn: Transaction) -> None:
            txn.execute("DELETE FROM access_tokens WHERE token_hash = ?", (token_hash,))
            txn.call_after(self.invalidator.invalidate, "_lookup_token_hash", [(token_hash,)])

        await self.db.run_interaction("delete_access_token", txn_fn)

    async def delete_all_access_tokens(
        self, user_id: str, except_token_id: int | None = None
    ) -> None:
        await self.db.run_interaction(
            "delete_all_access_tokens", self._delete_tokens_txn, user_id, None, except_token_id
        )

    # -- profiles ------------------------------------------------------------------
    @cached(max_entries=10000)
    async def get_profile(self, user_id: str) -> tuple[str | None, str | None] | None:
        rows = await self.db.execute(
            "get_profile", "SELECT displayname, avatar_url FROM profiles WHERE user_id = ?", user_id
        )
        return (rows[0][0], rows[0][1]) if rows else None

    async def set_profile_field(self, user_id: str, field: str, value: str | None) -> None:
        if field not in ("displayname", "avatar_url"):
            raise ValueError(field)

        def txn_fn(txn: Transaction) -> None:
            txn.upsert("profiles", {"user_id": user_id}, {field: value})
            txn.call_after(self.invalidator.invalidate, "get_profile", [(user_id,)])

        await self.db.run_interaction("set_profile_field", txn_fn)
