"""End-to-end encryption keys: upload, query, claim (client-server API "Key management API").

- ``upload_keys``: a device publishes its identity keys (signed by itself),
  one-time keys and fallback keys; new identity keys are a device-list change.
- ``query_keys``: identity keys of users' devices plus their cross-signing
  keys, with the signatures the requester may see.
- ``claim_keys``: one one-time key per requested device, else its fallback key.

Remote users who share a room with our users are served from the cache of
their device lists (``atrium.handlers.remote_device_lists``); other remote
users are asked of their own servers over federation
(``atrium.handlers.e2e_keys_remote``, set as ``remote`` by the composition
root when federation is on); servers that could not be reached are listed
in ``failures`` (keys/query: "If any remote homeservers could not be
reached, they are recorded here"), as is every remote server when
federation is off. Cross-signing uploads live in
``atrium.handlers.cross_signing``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from atrium.errors import BadJson, InvalidParam, MissingParam
from atrium.handlers.devices import DeviceHandler
from atrium.handlers.e2e_keys_remote import timeout_seconds
from atrium.storage.stores.e2e_keys import E2eKeysStore, KeyEntry

# What a remote server's entry in `failures` says when federation is off.
REMOTE_FAILURE = {"status": 503, "message": "Federation is not available on this server"}


# Identifiers (device IDs, algorithms, key IDs, event types, transaction IDs)
# are database index keys: like the spec's identifiers, at most 255 bytes.
MAX_IDENTIFIER_BYTES = 255


def clean_str(value: Any) -> bool:
    """A non-empty identifier the database can store and index (no NUL, no
    lone surrogates, at most MAX_IDENTIFIER_BYTES of UTF-8)."""
    if not isinstance(value, str) or not value or "\x00" in value:
        return False
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return len(encoded) <= MAX_IDENTIFIER_BYTES


def is_user_id(value: Any) -> bool:
    return clean_str(value) and value.startswith("@") and ":" in value


def server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1]


def parse_key_map(value: Any, name: str) -> list[KeyEntry]:
    """``{"<algorithm>:<key_id>": key}`` of an upload as (algorithm, key_id, key).

    A key is a string (unsigned key algorithms) or an object with a string
    ``key`` (signed ones, spec "Key algorithms").
    """
    if value is None:
        return []
    if not isinstance(value, dict):
        raise BadJson(f"'{name}' must be an object")
    entries = []
    for full_id, key in value.items():
        alg, sep, key_id = full_id.partition(":")
        if not sep or not clean_str(alg) or not clean_str(key_id):
            raise BadJson(f"'{name}' key IDs must look like <algorithm>:<key_id>")
        if isinstance(key, dict):
            if not isinstance(key.get("key"), str):
                raise BadJson(f"'{name}' key {full_id!r} has no string 'key'")
            if "signatures" in key and not isinstance(key["signatures"], dict):
                raise BadJson(f"'{name}' key {full_id!r} has malformed signatures")
        elif not isinstance(key, str):
            raise BadJson(f"'{name}' key {full_id!r} must be a string or an object")
        entries.append((alg, key_id, key))
    return entries


def merge_signatures(
    obj: dict[str, Any],
    extra: Mapping[str, Mapping[str, str]] | None,
    signers: set[str] | None = None,
) -> dict[str, Any]:
    """Add stored signatures (signer -> key ID -> signature) into a key object."""
    if not extra:
        return obj
    signatures = obj.get("signatures")
    if not isinstance(signatures, dict):
        signatures = obj["signatures"] = {}
    for signer, by_key in extra.items():
        if signers is not None and signer not in signers:
            continue
        signatures.setdefault(signer, {}).update(by_key)
    return obj


def public_key_of(key: Mapping[str, Any]) -> str | None:
    """The public key of a cross-signing key object (its one ``keys`` value)."""
    keys = key.get("keys")
    if isinstance(keys, dict) and len(keys) == 1:
        value = next(iter(keys.values()))
        return value if isinstance(value, str) else None
    return None


class E2eKeysHandler:
    def __init__(
        self,
        store: E2eKeysStore,
        devices: DeviceHandler,
        clock: Any,
        is_mine: Any,
    ) -> None:
        self.store = store
        self.devices = devices
        self.clock = clock
        self.is_mine = is_mine
        # RemoteE2eKeys when federation is on (set by the composition root).
        self.remote: Any = None
        # RemoteDeviceLists (the cache of remote device lists), likewise.
        self.remote_device_lists: Any = None

    # -- upload ------------------------------------------------------------------
    async def upload_keys(
        self, user_id: str, device_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """POST /keys/upload; returns ``one_time_key_counts``."""
        device_keys = body.get("device_keys")
        one_time = parse_key_map(body.get("one_time_keys"), "one_time_keys")
        fallback = parse_key_map(body.get("fallback_keys"), "fallback_keys")
        if len({alg for alg, _, _ in fallback}) != len(fallback):
            # keys/upload: "There can only be at most one key per algorithm".
            raise InvalidParam("At most one fallback key per algorithm may be uploaded")
        if device_keys is not None:
            self._check_device_keys(device_keys, user_id, device_id)
        now = self.clock.time_msec()
        if device_keys is not None:
            if await self.store.set_device_keys(user_id, device_id, device_keys, now):
                await self.devices.notify_device_update(user_id, [device_id])
        await self.store.add_one_time_keys(user_id, device_id, one_time, now)
        await self.store.set_fallback_keys(user_id, device_id, fallback)
        counts = await self.store.count_one_time_keys(user_id, device_id)
        return {"one_time_key_counts": counts}

    @staticmethod
    def _check_device_keys(keys: Any, user_id: str, device_id: str) -> None:
        """DeviceKeys (spec definitions/device_keys.yaml), owned and signed by the requester."""
        if not isinstance(keys, dict):
            raise BadJson("'device_keys' must be an object")
        if keys.get("user_id") != user_id or keys.get("device_id") != device_id:
            raise InvalidParam("'device_keys' must name the requesting user and device")
        algorithms = keys.get("algorithms")
        if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
            raise BadJson("'device_keys.algorithms' must be a list of strings")
        identity = keys.get("keys")
        if (
            not isinstance(identity, dict)
            or not identity
            or not all(isinstance(v, str) for v in identity.values())
        ):
            raise BadJson("'device_keys.keys' must map key IDs to keys")
        signatures = keys.get("signatures")
        own = signatures.get(user_id) if isinstance(signatures, dict) else None
        if (
            not isinstance(own, dict)
            or not own
            or not all(isinstance(v, str) for v in own.values())
        ):
            raise BadJson("'device_keys' must be signed by the device")
        if "unsigned" in keys and not isinstance(keys["unsigned"], dict):
            raise BadJson("'device_keys.unsigned' must be an object")

    # -- query ---------------------------------------------------------------------
    async def query_keys(self, requester: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /keys/query."""
        wanted = body.get("device_keys")
        if wanted is None:
            raise MissingParam("Missing 'device_keys'")
        if not isinstance(wanted, dict):
            raise BadJson("'device_keys' must be an object")
        local: dict[str, list[str]] = {}
        remote: dict[str, list[str]] = {}
        failures: dict[str, Any] = {}
        for user_id, device_ids in wanted.items():
            if not is_user_id(user_id):
                raise InvalidParam(f"{user_id[:100]!r} is not a user ID")
            if device_ids is None:
                device_ids = []
            if not isinstance(device_ids, list) or not all(clean_str(d) for d in device_ids):
                raise BadJson("'device_keys' must map user IDs to lists of device IDs")
            if self.is_mine(user_id):
                local[user_id] = device_ids
            elif self.remote is not None:
                remote[user_id] = device_ids
            else:
                failures[server_of(user_id)] = dict(REMOTE_FAILURE)

        found = await self.store.get_device_keys(local)
        signatures = await self.store.get_signatures(local)
        device_keys: dict[str, dict[str, Any]] = {}
        for user_id in local:
            devices = found.get(user_id, {})
            for device_id, obj in devices.items():
                merge_signatures(obj, signatures.get((user_id, device_id)))
            device_keys[user_id] = devices

        result: dict[str, Any] = {
            "device_keys": device_keys,
            "failures": failures,
            "master_keys": {},
            "self_signing_keys": {},
            "user_signing_keys": {},
        }
        cross = await self.store.get_cross_signing_keys(local)
        for user_id, by_type in cross.items():
            master = by_type.get("master")
            if master is not None:
                # Signatures of a master key by the owner's devices, and the
                # requester's own user-signing signature; a third party's
                # user-signing signatures stay private (spec "Cross-signing").
                pub = public_key_of(master)
                if pub is not None:
                    merge_signatures(master, signatures.get((user_id, pub)), {user_id, requester})
                result["master_keys"][user_id] = master
            if "self_signing" in by_type:
                result["self_signing_keys"][user_id] = by_type["self_signing"]
            if user_id == requester and "user_signing" in by_type:
                result["user_signing_keys"][user_id] = by_type["user_signing"]
        if remote and self.remote_device_lists is not None:
            # Users sharing a room with ours come from the cache of their
            # device lists; the others are asked of their servers.
            cached, remote = await self.remote_device_lists.keys_for_query(
                remote, timeout_seconds(body)
            )
            result["device_keys"].update(cached.device_keys)
            result["master_keys"].update(cached.master_keys)
            result["self_signing_keys"].update(cached.self_signing_keys)
        if remote:
            found_remote, remote_failures = await self.remote.query(remote, timeout_seconds(body))
            for section, by_user in found_remote.items():
                result[section].update(by_user)
            failures.update(remote_failures)
        return result

    # -- claim ------------------------------------------------------------------------
    async def claim_keys(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /keys/claim."""
        wanted = body.get("one_time_keys")
        if wanted is None:
            raise MissingParam("Missing 'one_time_keys'")
        if not isinstance(wanted, dict):
            raise BadJson("'one_time_keys' must be an object")
        claims: list[tuple[str, str, str]] = []
        remote: dict[str, dict[str, str]] = {}
        failures: dict[str, Any] = {}
        for user_id, by_device in wanted.items():
            if not is_user_id(user_id):
                raise InvalidParam(f"{user_id[:100]!r} is not a user ID")
            if not isinstance(by_device, dict) or not all(
                clean_str(d) and clean_str(a) for d, a in by_device.items()
            ):
                raise BadJson("'one_time_keys' must map user IDs to {device ID: algorithm}")
            if self.is_mine(user_id):
                claims.extend((user_id, d, a) for d, a in by_device.items())
            elif self.remote is not None:
                remote[user_id] = by_device
            else:
                failures[server_of(user_id)] = dict(REMOTE_FAILURE)
        claimed = await self.store.claim_keys(claims)
        if remote:
            claimed_remote, remote_failures = await self.remote.claim(remote, timeout_seconds(body))
            claimed.update(claimed_remote)
            failures.update(remote_failures)
        return {"one_time_keys": claimed, "failures": failures}

    # -- /sync -----------------------------------------------------------------------------
    async def get_key_counts(
        self, user_id: str, device_id: str
    ) -> tuple[dict[str, int], list[str]]:
        """(one-time key counts, unused fallback key algorithms) of a device."""
        return await self.store.get_key_counts(user_id, device_id)
