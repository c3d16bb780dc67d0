"""Cross-signing: uploading the three signing keys and signatures made with them.

Spec: client-server API "Cross-signing" and cross_signing.yaml:
- ``POST /keys/device_signing/upload`` stores the master, self-signing and
  user-signing keys. The self-signing and user-signing keys must carry a
  valid signature of the (new or stored) master key. User-interactive auth
  is skipped when the user has no master key yet, or when the request only
  repeats the stored keys (v1.11: "the request contains no new keys").
- ``POST /keys/signatures/upload`` stores signatures of the requester's own
  devices (by their self-signing key), of their own master key (by one of
  their devices) and of other users' master keys (by their user-signing
  key). Each signed object must match the stored key apart from
  ``signatures``/``unsigned``; every failure is reported per key in
  ``failures`` instead of failing the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from atrium.crypto.event_signing import SignatureVerifyError, verify_json_object
from atrium.crypto.keys import decode_verify_key_id
from atrium.errors import BadJson, Forbidden, InvalidParam, MatrixError, MissingParam
from atrium.handlers.devices import DeviceHandler
from atrium.handlers.e2e_keys import clean_str, is_user_id, public_key_of
from atrium.storage.stores.accounts import AccountStore
from atrium.storage.stores.e2e_keys import E2eKeysStore

# Request field -> key type, in the order they are checked.
SIGNING_KEY_FIELDS = (
    ("master_key", "master"),
    ("self_signing_key", "self_signing"),
    ("user_signing_key", "user_signing"),
)


def invalid_signature(msg: str) -> MatrixError:
    return MatrixError(400, msg, "M_INVALID_SIGNATURE")


def _signed_content(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What a signature covers (appendices "Signing JSON")."""
    return {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}


def _check_signed_by(
    obj: Mapping[str, Any], signer: str, public_key: str, key_id: str | None = None
) -> str:
    """Verify ``signer``'s signature under ``key_id`` (by default
    ``ed25519:<public_key>``, as for cross-signing keys) with ed25519
    ``public_key``; returns the signature."""
    key_id = key_id or f"ed25519:{public_key}"
    try:
        verify_keys: dict[str, Any] = {key_id: decode_verify_key_id(key_id, public_key)}
        verify_json_object(obj, signer, verify_keys)
    except (ValueError, SignatureVerifyError) as e:
        raise invalid_signature(f"Invalid signature by {key_id}: {e}") from None
    return obj["signatures"][signer][key_id]


class _Failure(Exception):
    def __init__(self, errcode: str, error: str) -> None:
        super().__init__(error)
        self.json = {"errcode": errcode, "error": error}


class CrossSigningHandler:
    def __init__(
        self,
        store: E2eKeysStore,
        accounts: AccountStore,
        devices: DeviceHandler,
        uia: Any,
        clock: Any,
        is_mine: Any,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.devices = devices
        self.uia = uia
        self.clock = clock
        self.is_mine = is_mine

    # -- signing keys --------------------------------------------------------------------
    async def upload_signing_keys(self, user_id: str, body: Mapping[str, Any]) -> None:
        """POST /keys/device_signing/upload (raises InteractiveAuthIncomplete for a 401)."""
        new: dict[str, dict[str, Any]] = {}
        for field, keytype in SIGNING_KEY_FIELDS:
            obj = body.get(field)
            if obj is not None:
                self._check_signing_key(obj, field, keytype, user_id)
                new[keytype] = obj
        existing = (await self.store.get_cross_signing_keys([user_id])).get(user_id, {})
        if "master" in existing:
            if all(existing.get(t) == obj for t, obj in new.items()):
                return  # a retry of an upload that went through: idempotent, no UIA
            await self.uia.check(dict(body), [["m.login.password"]], user_id=user_id)
        if not new:
            return
        master = new.get("master") or existing.get("master")
        if master is None:
            raise MissingParam("No master signing key is available")
        master_pub = public_key_of(master)
        assert master_pub is not None
        for keytype in ("self_signing", "user_signing"):
            if keytype in new:
                _check_signed_by(new[keytype], user_id, master_pub)
        devices = await self.accounts.get_devices(user_id)
        published = [public_key_of(obj) for obj in new.values()]
        if any(pub in devices for pub in published):
            raise Forbidden("Key ID in use")
        await self.store.set_cross_signing_keys(user_id, new, self.clock.time_msec())
        await self.devices.notify_device_update(user_id, [p for p in published if p])

    @staticmethod
    def _check_signing_key(obj: Any, field: str, keytype: str, user_id: str) -> None:
        """CrossSigningKey (definitions/cross_signing_key.yaml) of the requester."""
        if not isinstance(obj, dict):
            raise BadJson(f"'{field}' must be an object")
        if obj.get("user_id") != user_id:
            raise InvalidParam(f"'{field}.user_id' must be the requesting user")
        usage = obj.get("usage")
        if not isinstance(usage, list) or keytype not in usage:
            raise BadJson(f"'{field}.usage' must include {keytype!r}")
        keys = obj.get("keys")
        if not isinstance(keys, dict) or len(keys) != 1:
            raise BadJson(f"'{field}.keys' must hold exactly one key")
        ((name, value),) = keys.items()
        if not clean_str(value) or name != f"ed25519:{value}":
            raise BadJson(f"'{field}.keys' must be {{'ed25519:<public key>': '<public key>'}}")
        if "signatures" in obj and not isinstance(obj["signatures"], dict):
            raise BadJson(f"'{field}.signatures' must be an object")

    # -- signatures ---------------------------------------------------------------------------
    async def upload_signatures(self, user_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /keys/signatures/upload; returns ``failures``."""
        failures: dict[str, dict[str, Any]] = {}
        rows: list[tuple[str, str, str, str, str]] = []
        own_targets: list[str] = []
        signed_users: set[str] = set()
        own_keys = (await self.store.get_cross_signing_keys([user_id])).get(user_id, {})
        for target_user, by_key in body.items():
            if not is_user_id(target_user) or not isinstance(by_key, dict):
                raise BadJson("The body must map user IDs to {key ID: signed object}")
            for key_id, obj in by_key.items():
                try:
                    if not clean_str(key_id) or not isinstance(obj, dict):
                        raise _Failure("M_BAD_JSON", "Signed keys must be objects")
                    if obj.get("user_id") != target_user:
                        raise _Failure("M_INVALID_PARAM", "'user_id' does not match")
                    if target_user == user_id:
                        row = await self._own_signature(user_id, key_id, obj, own_keys)
                        own_targets.append(key_id)
                    else:
                        row = await self._other_signature(
                            user_id, target_user, key_id, obj, own_keys
                        )
                        signed_users.add(target_user)
                    rows.append(row)
                except _Failure as f:
                    failures.setdefault(target_user, {})[key_id] = f.json
                except MatrixError as e:
                    failures.setdefault(target_user, {})[key_id] = e.to_json()
        await self.store.store_signatures(rows)
        if own_targets:
            await self.devices.notify_device_update(user_id, own_targets)
        if signed_users:
            await self.devices.notify_user_signature_update(user_id, signed_users)
        return {"failures": failures}

    def _new_signature(
        self,
        obj: Mapping[str, Any],
        signer: str,
        public_key: str | None,
        what: str,
        key_id: str | None = None,
    ) -> tuple[str, str]:
        """(key ID, signature) of ``signer``'s key ``public_key`` on ``obj``, checked."""
        if public_key is None:
            raise _Failure("M_INVALID_SIGNATURE", f"No {what} key to check the signature with")
        key_id = key_id or f"ed25519:{public_key}"
        signatures = obj.get("signatures")
        by_signer = signatures.get(signer) if isinstance(signatures, dict) else None
        if not isinstance(by_signer, dict) or key_id not in by_signer:
            raise _Failure("M_INVALID_SIGNATURE", f"Missing signature by the {what} key")
        return key_id, _check_signed_by(obj, signer, public_key, key_id)

    async def _own_signature(
        self, user_id: str, key_id: str, obj: Mapping[str, Any], own_keys: Mapping[str, Any]
    ) -> tuple[str, str, str, str, str]:
        master = own_keys.get("master")
        if master is not None and key_id == public_key_of(master):
            # The master key, signed by one of the user's devices.
            if _signed_content(obj) != _signed_content(master):
                raise _Failure("M_INVALID_SIGNATURE", "Signed object does not match the master key")
            devices = (await self.store.get_device_keys({user_id: []})).get(user_id, {})
            signatures = obj.get("signatures")
            by_signer = signatures.get(user_id) if isinstance(signatures, dict) else None
            for sig_key_id in by_signer if isinstance(by_signer, dict) else ():
                device_id = sig_key_id.partition(":")[2]
                device = devices.get(device_id)
                device_pub = device.get("keys", {}).get(sig_key_id) if device else None
                if isinstance(device_pub, str):
                    _, signature = self._new_signature(
                        obj, user_id, device_pub, "device", sig_key_id
                    )
                    return (user_id, sig_key_id, user_id, key_id, signature)
            raise _Failure("M_INVALID_SIGNATURE", "No signature by one of the user's devices")
        # One of the user's devices, signed by their self-signing key.
        device = (
            (await self.store.get_device_keys({user_id: [key_id]})).get(user_id, {}).get(key_id)
        )
        if device is None:
            raise _Failure("M_NOT_FOUND", "No such device or key")
        if _signed_content(obj) != _signed_content(device):
            raise _Failure("M_INVALID_SIGNATURE", "Signed object does not match the device keys")
        ssk = own_keys.get("self_signing")
        sig_key_id, signature = self._new_signature(
            obj, user_id, public_key_of(ssk) if ssk else None, "self-signing"
        )
        return (user_id, sig_key_id, user_id, key_id, signature)

    async def _other_signature(
        self,
        user_id: str,
        target_user: str,
        key_id: str,
        obj: Mapping[str, Any],
        own_keys: Mapping[str, Any],
    ) -> tuple[str, str, str, str, str]:
        if not self.is_mine(target_user):
            raise _Failure("M_NOT_FOUND", "Keys of remote users are not known to this server")
        master = (
            (await self.store.get_cross_signing_keys([target_user], ("master",)))
            .get(target_user, {})
            .get("master")
        )
        if master is None or key_id != public_key_of(master):
            raise _Failure("M_NOT_FOUND", "Not the user's master key")
        if _signed_content(obj) != _signed_content(master):
            raise _Failure("M_INVALID_SIGNATURE", "Signed object does not match the master key")
        usk = own_keys.get("user_signing")
        sig_key_id, signature = self._new_signature(
            obj, user_id, public_key_of(usk) if usk else None, "user-signing"
        )
        return (user_id, sig_key_id, target_user, key_id, signature)
