"""Queries other servers make about our users and aliases.

Server-server API "Querying for information" (``/query/profile``,
``/query/directory``), "Device Management" (``/user/devices/{userId}``) and
"End-to-End Encryption" (``/user/keys/query``, ``/user/keys/claim``). Only
local users and aliases are answered; entries about other servers' users in
a key query or claim are ignored.
"""

from __future__ import annotations

from typing import Any

from atrium.errors import BadJson, InvalidParam, MissingParam, NotFound
from atrium.handlers.e2e_keys import E2eKeysHandler, public_key_of
from atrium.storage.stores import Stores
from atrium.storage.stores.accounts import AccountStore
from atrium.storage.stores.directory import DirectoryStore
from atrium.storage.stores.e2e_keys import E2eKeysStore

PROFILE_FIELDS = ("displayname", "avatar_url")


class FederationQueryHandler:
    def __init__(
        self,
        *,
        stores: Stores,
        accounts: AccountStore,
        directory: DirectoryStore,
        profile: Any,  # ProfileHandler
        e2e_keys: E2eKeysHandler,
        e2e_keys_store: E2eKeysStore,
        federation_store: Any,  # FederationStore (device-list stream ids)
        is_mine: Any,
        server_name: str,
    ) -> None:
        self.stores = stores
        self.accounts = accounts
        self.directory = directory
        self.profile = profile
        self.e2e_keys = e2e_keys
        self.e2e_keys_store = e2e_keys_store
        self.federation_store = federation_store
        self.is_mine = is_mine
        self.server_name = server_name

    def _require_local_user(self, user_id: str) -> None:
        if not user_id.startswith("@") or ":" not in user_id:
            raise InvalidParam(f"{user_id[:100]!r} is not a user ID")
        if not self.is_mine(user_id):
            raise InvalidParam(f"{user_id[:100]!r} is not a user of {self.server_name}")

    async def query_profile(self, user_id: str, field: str | None) -> dict[str, Any]:
        self._require_local_user(user_id)
        if field is not None and field not in PROFILE_FIELDS:
            raise InvalidParam(f"Unknown profile field {field[:100]!r}")
        profile = await self.profile.get_profile(user_id)  # NotFound for unknown users
        if field is not None:
            return {field: profile[field]} if field in profile else {}
        return profile

    async def query_directory(self, room_alias: str) -> dict[str, Any]:
        if not room_alias.startswith("#") or room_alias.split(":", 1)[-1] != self.server_name:
            raise NotFound(f"Room alias {room_alias[:255]} not found")
        found = await self.directory.get_room_for_alias(room_alias)
        if found is None:
            raise NotFound(f"Room alias {room_alias[:255]} not found")
        room_id = found[0]
        hosts = {u.split(":", 1)[1] for u in await self.stores.members.get_users_in_room(room_id)}
        hosts.discard(self.server_name)
        return {"room_id": room_id, "servers": [self.server_name, *sorted(hosts)]}

    async def user_devices(self, user_id: str) -> dict[str, Any]:
        self._require_local_user(user_id)
        if await self.accounts.get_user(user_id) is None:
            raise NotFound("Unknown user")
        devices = await self.accounts.get_devices(user_id)
        keys = (await self.e2e_keys_store.get_device_keys({user_id: []})).get(user_id, {})
        result_devices = []
        for device_id, device in sorted(devices.items()):
            entry: dict[str, Any] = {"device_id": device_id}
            if device_id in keys:
                device_keys = dict(keys[device_id])
                device_keys.pop("unsigned", None)
                entry["keys"] = device_keys
            if device.display_name is not None:
                entry["device_display_name"] = device.display_name
            result_devices.append(entry)
        answer: dict[str, Any] = {
            "user_id": user_id,
            "stream_id": await self.federation_store.get_device_list_stream_id(user_id),
            "devices": result_devices,
        }
        cross = (await self.e2e_keys_store.get_cross_signing_keys([user_id])).get(user_id, {})
        if "master" in cross and public_key_of(cross["master"]) is not None:
            answer["master_key"] = cross["master"]
        if "self_signing" in cross:
            answer["self_signing_key"] = cross["self_signing"]
        return answer

    async def query_keys(self, body: dict[str, Any]) -> dict[str, Any]:
        wanted = body.get("device_keys")
        if wanted is None:
            raise MissingParam("Missing 'device_keys'")
        if not isinstance(wanted, dict):
            raise BadJson("'device_keys' must be an object")
        local = {u: d for u, d in wanted.items() if isinstance(u, str) and self.is_mine(u)}
        # No requesting user: a third party's user-signing signatures stay private.
        result = await self.e2e_keys.query_keys("", {"device_keys": local})
        return {
            "device_keys": result["device_keys"],
            "master_keys": result["master_keys"],
            "self_signing_keys": result["self_signing_keys"],
        }

    async def claim_keys(self, body: dict[str, Any]) -> dict[str, Any]:
        wanted = body.get("one_time_keys")
        if wanted is None:
            raise MissingParam("Missing 'one_time_keys'")
        if not isinstance(wanted, dict):
            raise BadJson("'one_time_keys' must be an object")
        local = {u: d for u, d in wanted.items() if isinstance(u, str) and self.is_mine(u)}
        result = await self.e2e_keys.claim_keys({"one_time_keys": local})
        return {"one_time_keys": result["one_time_keys"]}
