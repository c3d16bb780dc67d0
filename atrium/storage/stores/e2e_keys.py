"""E2eKeysStore: device identity keys, one-time and fallback keys, cross-signing.

Spec: client-server API "End-to-End Encryption", "Key management API" and
"Cross-signing". Key objects are kept as the JSON text the client sent and
parsed on the way out; signatures uploaded later through
``/keys/signatures/upload`` live in their own table and are merged into the
objects when they are read (``get_signatures``).

Nothing here is cached: key reads happen on /keys/query and /keys/claim,
which clients call rarely compared with /sync, and writes may come from any
process serving the ``keys`` routes.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from canonicaljson import encode_canonical_json

from atrium.errors import BadJson, InvalidParam
from atrium.storage.database import DatabasePool, Transaction

# (algorithm, key_id, key object) as parsed from an upload's "<algorithm>:<key_id>".
KeyEntry = tuple[str, str, Any]
# target user -> target device (or public key) -> signer -> key ID -> signature
SignatureMap = dict[tuple[str, str], dict[str, dict[str, str]]]

CROSS_SIGNING_KEY_TYPES = ("master", "self_signing", "user_signing")


def _encode(obj: Any) -> str:
    try:
        return encode_canonical_json(obj).decode("utf-8")
    except (TypeError, ValueError):
        # Floats, huge integers, bad surrogates: not canonical JSON (appendices).
        raise BadJson("Key objects must be canonical JSON") from None


class E2eKeysStore:
    """Reads and writes of the e2e_* tables."""

    def __init__(self, db: DatabasePool) -> None:
        self.db = db

    # -- device identity keys ------------------------------------------------------
    async def get_device_keys(
        self, query: Mapping[str, Collection[str]]
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """user -> device -> key object plus ``unsigned.device_display_name``.

        ``query`` maps user IDs to device IDs; an empty collection means every
        device of that user. Devices without uploaded keys are left out.
        """

        def txn_fn(txn: Transaction) -> list[tuple[Any, ...]]:
            rows: list[tuple[Any, ...]] = []
            base = (
                "SELECT k.user_id, k.device_id, k.key_json, d.display_name"
                " FROM e2e_device_keys_json AS k LEFT JOIN devices AS d"
                " ON d.user_id = k.user_id AND d.device_id = k.device_id"
            )
            for user_id, device_ids in query.items():
                if not device_ids:
                    rows.extend(txn.select_all(base + " WHERE k.user_id = ?", (user_id,)))
                else:
                    rows.extend(
                        txn.select_many(
                            base + " WHERE {in} AND k.user_id = ?",
                            "k.device_id",
                            set(device_ids),
                            (user_id,),
                        )
                    )
            return rows

        rows = await self.db.run_interaction("get_device_keys", txn_fn)
        result: dict[str, dict[str, dict[str, Any]]] = {}
        for user_id, device_id, key_json, display_name in rows:
            keys = json.loads(key_json)
            unsigned = keys.setdefault("unsigned", {})
            if display_name is not None:
                unsigned["device_display_name"] = display_name
            result.setdefault(user_id, {})[device_id] = keys
        return result

    async def set_device_keys(
        self, user_id: str, device_id: str, keys: Mapping[str, Any], ts: int
    ) -> bool:
        """Store a device's identity keys; True when they differ from the stored ones."""
        key_json = _encode(keys)

        def txn_fn(txn: Transaction) -> bool:
            old = txn.select_one(
                "SELECT key_json FROM e2e_device_keys_json WHERE user_id = ? AND device_id = ?",
                (user_id, device_id),
            )
            if old is not None and old[0] == key_json:
                return False
            txn.upsert(
                "e2e_device_keys_json",
                {"user_id": user_id, "device_id": device_id},
                {"ts_added_ms": ts, "key_json": key_json},
            )
            return True

        return await self.db.run_interaction("set_device_keys", txn_fn)

    # -- one-time keys ---------------------------------------------------------------
    async def add_one_time_keys(
        self, user_id: str, device_id: str, keys: Iterable[KeyEntry], ts: int
    ) -> None:
        """Add one-time keys. Re-uploading an identical key is a no-op; reusing a
        key ID for a different key is refused (M_INVALID_PARAM), since a client
        that does so has lost track of which private keys it holds."""
        new = [(alg, key_id, _encode(obj)) for alg, key_id, obj in keys]
        if not new:
            return

        def txn_fn(txn: Transaction) -> None:
            existing = {
                (r[0], r[1]): r[2]
                for r in txn.select_many(
                    "SELECT algorithm, key_id, key_json FROM e2e_one_time_keys_json"
                    " WHERE {in} AND user_id = ? AND device_id = ?",
                    "key_id",
                    {key_id for _, key_id, _ in new},
                    (user_id, device_id),
                )
            }
            rows = []
            for alg, key_id, key_json in new:
                old = existing.get((alg, key_id))
                if old is None:
                    rows.append((user_id, device_id, alg, key_id, ts, key_json))
                    existing[(alg, key_id)] = key_json
                elif old != key_json:
                    raise InvalidParam(
                        f"One-time key {alg}:{key_id} already exists with other content"
                    )
            txn.insert_many(
                "e2e_one_time_keys_json",
                ("user_id", "device_id", "algorithm", "key_id", "ts_added_ms", "key_json"),
                rows,
            )

        await self.db.run_interaction("add_one_time_keys", txn_fn)

    async def count_one_time_keys(self, user_id: str, device_id: str) -> dict[str, int]:
        """algorithm -> number of unclaimed one-time keys of the device."""
        rows = await self.db.execute(
            "count_one_time_keys",
            "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys_json"
            " WHERE user_id = ? AND device_id = ? GROUP BY algorithm",
            user_id,
            device_id,
        )
        return {r[0]: int(r[1]) for r in rows}

    async def get_key_counts(
        self, user_id: str, device_id: str
    ) -> tuple[dict[str, int], list[str]]:
        """(one-time key counts, unused fallback key algorithms): what /sync reports."""

        def txn_fn(txn: Transaction) -> tuple[dict[str, int], list[str]]:
            counts = txn.select_all(
                "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys_json"
                " WHERE user_id = ? AND device_id = ? GROUP BY algorithm",
                (user_id, device_id),
            )
            unused = txn.select_all(
                "SELECT algorithm FROM e2e_fallback_keys_json"
                " WHERE user_id = ? AND device_id = ? AND used = FALSE ORDER BY algorithm",
                (user_id, device_id),
            )
            return {r[0]: int(r[1]) for r in counts}, [r[0] for r in unused]

        return await self.db.run_interaction("get_key_counts", txn_fn)

    # -- fallback keys -----------------------------------------------------------------
    async def set_fallback_keys(
        self, user_id: str, device_id: str, keys: Iterable[KeyEntry]
    ) -> None:
        """Replace the device's fallback key of each algorithm given.

        Uploading the very key already stored keeps its ``used`` flag: a
        client retrying an upload must not make a used key look fresh.
        """
        new = [(alg, key_id, _encode(obj)) for alg, key_id, obj in keys]
        if not new:
            return

        def txn_fn(txn: Transaction) -> None:
            for alg, key_id, key_json in new:
                old = txn.select_one(
                    "SELECT key_id, key_json FROM e2e_fallback_keys_json"
                    " WHERE user_id = ? AND device_id = ? AND algorithm = ?",
                    (user_id, device_id, alg),
                )
                if old is not None and (old[0], old[1]) == (key_id, key_json):
                    continue
                txn.upsert(
                    "e2e_fallback_keys_json",
                    {"user_id": user_id, "device_id": device_id, "algorithm": alg},
                    {"key_id": key_id, "key_json": key_json, "used": False},
                )

        await self.db.run_interaction("set_fallback_keys", txn_fn)

    async def get_unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        rows = await self.db.execute(
            "get_unused_fallback_key_types",
            "SELECT algorithm FROM e2e_fallback_keys_json"
            " WHERE user_id = ? AND device_id = ? AND used = FALSE ORDER BY algorithm",
            user_id,
            device_id,
        )
        return [r[0] for r in rows]

    # -- claiming ------------------------------------------------------------------------
    async def claim_keys(
        self, claims: Iterable[tuple[str, str, str]]
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """Claim one key per (user, device, algorithm): user -> device -> {"alg:id": key}.

        A one-time key is handed out at most once: it is deleted in the same
        transaction, and when a concurrent claim deleted it first (our DELETE
        matches no row) the next one is tried. Keys go out oldest upload
        first (keys/claim: "given out in the order that they were uploaded").
        With no one-time key left, the fallback key is returned and marked used.
        """
        wanted = list(claims)

        def txn_fn(txn: Transaction) -> list[tuple[str, str, str, str, str]]:
            out = []
            for user_id, device_id, alg in wanted:
                found = None
                while True:
                    row = txn.select_one(
                        "SELECT key_id, key_json FROM e2e_one_time_keys_json"
                        " WHERE user_id = ? AND device_id = ? AND algorithm = ?"
                        " ORDER BY ts_added_ms, key_id LIMIT 1",
                        (user_id, device_id, alg),
                    )
                    if row is None:
                        break
                    txn.execute(
                        "DELETE FROM e2e_one_time_keys_json WHERE user_id = ? AND device_id = ?"
                        " AND algorithm = ? AND key_id = ?",
                        (user_id, device_id, alg, row[0]),
                    )
                    if txn.rowcount == 1:
                        found = row
                        break
                if found is None:
                    found = txn.select_one(
                        "SELECT key_id, key_json FROM e2e_fallback_keys_json"
                        " WHERE user_id = ? AND device_id = ? AND algorithm = ?",
                        (user_id, device_id, alg),
                    )
                    if found is not None:
                        txn.execute(
                            "UPDATE e2e_fallback_keys_json SET used = TRUE"
                            " WHERE user_id = ? AND device_id = ? AND algorithm = ?",
                            (user_id, device_id, alg),
                        )
                if found is not None:
                    out.append((user_id, device_id, alg, found[0], found[1]))
            return out

        rows = await self.db.run_interaction("claim_keys", txn_fn)
        result: dict[str, dict[str, dict[str, Any]]] = {}
        for user_id, device_id, alg, key_id, key_json in rows:
            result.setdefault(user_id, {})[device_id] = {f"{alg}:{key_id}": json.loads(key_json)}
        return result

    # -- deleting a device ------------------------------------------------------------------
    async def delete_device_keys(self, user_id: str, device_ids: Collection[str]) -> None:
        """Forget every key of the devices and the signatures made of them."""
        if not device_ids:
            return

        def txn_fn(txn: Transaction) -> None:
            for device_id in set(device_ids):
                for table in (
                    "e2e_device_keys_json",
                    "e2e_one_time_keys_json",
                    "e2e_fallback_keys_json",
                ):
                    txn.execute(
                        f"DELETE FROM {table} WHERE user_id = ? AND device_id = ?",
                        (user_id, device_id),
                    )
                txn.execute(
                    "DELETE FROM e2e_cross_signing_signatures"
                    " WHERE target_user_id = ? AND target_device_id = ?",
                    (user_id, device_id),
                )

        await self.db.run_interaction("delete_device_keys", txn_fn)

    # -- cross-signing keys -------------------------------------------------------------------
    async def get_cross_signing_keys(
        self, user_ids: Collection[str], key_types: Collection[str] = CROSS_SIGNING_KEY_TYPES
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """user -> key type -> the key object as uploaded."""
        if not user_ids or not key_types:
            return {}

        def txn_fn(txn: Transaction) -> list[tuple[Any, ...]]:
            return txn.select_many(
                "SELECT user_id, keytype, key_json FROM e2e_cross_signing_keys WHERE {in}",
                "user_id",
                set(user_ids),
            )

        rows = await self.db.run_interaction("get_cross_signing_keys", txn_fn)
        result: dict[str, dict[str, dict[str, Any]]] = {}
        for user_id, keytype, key_json in rows:
            if keytype in key_types:
                result.setdefault(user_id, {})[keytype] = json.loads(key_json)
        return result

    async def set_cross_signing_keys(
        self, user_id: str, keys: Mapping[str, Mapping[str, Any]], ts: int
    ) -> None:
        """Store the given key types (others untouched). A replaced key's
        signatures are dropped: they were made over a different public key."""

        def txn_fn(txn: Transaction) -> None:
            for keytype, obj in keys.items():
                old = txn.select_one(
                    "SELECT key_json FROM e2e_cross_signing_keys WHERE user_id = ? AND keytype = ?",
                    (user_id, keytype),
                )
                if old is not None:
                    for old_public in json.loads(old[0]).get("keys", {}).values():
                        txn.execute(
                            "DELETE FROM e2e_cross_signing_signatures"
                            " WHERE target_user_id = ? AND target_device_id = ?",
                            (user_id, old_public),
                        )
                txn.upsert(
                    "e2e_cross_signing_keys",
                    {"user_id": user_id, "keytype": keytype},
                    {"key_json": _encode(obj), "ts_added_ms": ts},
                )

        await self.db.run_interaction("set_cross_signing_keys", txn_fn)

    # -- signatures ---------------------------------------------------------------------------
    async def store_signatures(self, rows: Collection[tuple[str, str, str, str, str]]) -> None:
        """Store (signer, signer key ID, target user, target device or public key, signature)."""
        if not rows:
            return

        def txn_fn(txn: Transaction) -> None:
            for signer, key_id, target_user, target_device, signature in rows:
                txn.upsert(
                    "e2e_cross_signing_signatures",
                    {
                        "signer_user_id": signer,
                        "key_id": key_id,
                        "target_user_id": target_user,
                        "target_device_id": target_device,
                    },
                    {"signature": signature},
                )

        await self.db.run_interaction("store_signatures", txn_fn)

    async def get_signatures(self, target_user_ids: Collection[str]) -> SignatureMap:
        """(target user, target device or public key) -> signer -> key ID -> signature."""
        if not target_user_ids:
            return {}

        def txn_fn(txn: Transaction) -> list[tuple[Any, ...]]:
            return txn.select_many(
                "SELECT target_user_id, target_device_id, signer_user_id, key_id, signature"
                " FROM e2e_cross_signing_signatures WHERE {in}",
                "target_user_id",
                set(target_user_ids),
            )

        rows = await self.db.run_interaction("get_signatures", txn_fn)
        result: SignatureMap = {}
        for target_user, target_device, signer, key_id, signature in rows:
            by_signer = result.setdefault((target_user, target_device), {})
            by_signer.setdefault(signer, {})[key_id] = signature
        return result
