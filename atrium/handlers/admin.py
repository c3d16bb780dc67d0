"""The admin API's logic: users and rooms as an operator sees them."""

from __future__ import annotations

from typing import Any

from atrium import __version__
from atrium.errors import BadJson, NotFound
from atrium.storage.stores import Stores
from atrium.storage.stores.accounts import AccountStore, UserInfo
from atrium.storage.stores.rooms import list_rooms_with_counts


def _user_json(user: UserInfo, profile: tuple[str | None, str | None] | None) -> dict[str, Any]:
    return {
        "name": user.user_id,
        "admin": user.admin,
        "deactivated": user.deactivated,
        "creation_ts": user.creation_ts,
        "displayname": profile[0] if profile else None,
        "avatar_url": profile[1] if profile else None,
    }


class AdminHandler:
    def __init__(
        self,
        *,
        stores: Stores,
        accounts: AccountStore,
        devices: Any,
        room_members: Any,
        server_name: str,
    ) -> None:
        self.server_name = server_name
        self.stores = stores
        self.accounts = accounts
        self.devices = devices
        self.room_members = room_members

    def server_version(self) -> dict[str, Any]:
        return {"server_version": f"Atrium {__version__}"}

    async def list_users(self, offset: int, limit: int) -> dict[str, Any]:
        users, total = await self.accounts.list_users(offset, limit)
        items = [_user_json(u, await self.accounts.get_profile(u.user_id)) for u in users]
        result: dict[str, Any] = {"users": items, "total": total}
        if offset + len(items) < total:
            result["next_token"] = str(offset + len(items))
        return result

    async def get_user(self, user_id: str) -> dict[str, Any]:
        user = await self.accounts.get_user(user_id)
        if user is None:
            raise NotFound(f"No local user {user_id}")
        result = _user_json(user, await self.accounts.get_profile(user_id))
        result["devices"] = sorted(await self.accounts.get_devices(user_id))
        result["joined_rooms"] = sorted(await self.stores.members.get_rooms_for_user(user_id))
        return result

    async def deactivate_user(self, user_id: str, requester_user_id: str) -> dict[str, Any]:
        """Lock the account: no password, no devices or tokens, out of every room."""
        user = await self.accounts.get_user(user_id)
        if user is None:
            raise NotFound(f"No local user {user_id}")
        if user_id == requester_user_id:
            raise BadJson("Admins cannot deactivate themselves")
        await self.accounts.set_password_hash(user_id, None)
        devices = await self.accounts.get_devices(user_id)
        await self.devices.delete_devices(user_id, list(devices))
        await self.accounts.delete_all_access_tokens(user_id)
        for room_id in sorted(await self.stores.members.get_rooms_for_user(user_id)):
            await self.room_members.update_membership(user_id, user_id, room_id, "leave")
        await self.accounts.set_deactivated(user_id, True)
        return {"id_server_unbind_result": "no-support"}

    async def list_rooms(self, offset: int, limit: int) -> dict[str, Any]:
        rows, total = await list_rooms_with_counts(self.stores.db, offset, limit)
        rooms = [
            {
                "room_id": r[0],
                "version": r[1],
                "creator": r[2],
                "public": r[3],
                "joined_members": r[4],
            }
            for r in rows
        ]
        result: dict[str, Any] = {"rooms": rooms, "total_rooms": total, "offset": offset}
        if offset + len(rooms) < total:
            result["next_batch"] = offset + len(rooms)
        return result

    async def room_details(self, room_id: str) -> dict[str, Any]:
        info = await self.stores.rooms.get_room(room_id)
        if info is None:
            raise NotFound(f"Unknown room {room_id}")
        state_ids = await self.stores.members.get_current_state_ids(room_id)
        wanted = {
            ("m.room.name", ""): ("name", "name"),
            ("m.room.topic", ""): ("topic", "topic"),
            ("m.room.canonical_alias", ""): ("canonical_alias", "alias"),
            ("m.room.join_rules", ""): ("join_rules", "join_rule"),
            ("m.room.history_visibility", ""): ("history_visibility", "history_visibility"),
            ("m.room.encryption", ""): ("encryption", "algorithm"),
        }
        events = await self.stores.events.get_events(
            [state_ids[k] for k in wanted if k in state_ids]
        )
        details: dict[str, Any] = {
            "room_id": room_id,
            "version": info.room_version_id,
            "creator": info.creator,
            "public": info.is_public,
            "state_events": len(state_ids),
        }
        for key, (field, content_key) in wanted.items():
            event = events.get(state_ids.get(key, ""))
            details[field] = event.content.get(content_key) if event is not None else None
        counts = await self.stores.members.get_membership_counts(room_id)
        details["joined_members"] = counts.get("join", 0)
        details["invited_members"] = counts.get("invite", 0)
        details["joined_local_members"] = sum(
            1
            for u in await self.stores.members.get_users_in_room(room_id)
            if u.endswith(":" + self.server_name)
        )
        return details
