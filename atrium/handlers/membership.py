"""Room membership changes: join, invite, leave, kick, ban, unban, forget
(spec: client-server API "Room membership").

With federation on, ``remote`` (handlers/remote_membership.py) handles what
this server cannot do alone: joining a room no user of ours is in
(make_join/send_join through the given servers, the inviter's server or the
room ID's server), leaving such a room (rejecting an invite), inviting a
user of another server (their server countersigns first), and aliases of
other servers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from atrium.errors import BadJson, Forbidden, NotFound
from atrium.events.event import Event
from atrium.handlers.event_creation import EventCreationHandler
from atrium.storage.stores import Stores
from atrium.storage.stores.accounts import AccountStore
from atrium.storage.stores.directory import DirectoryStore

MEMBERSHIP_ACTIONS = ("join", "invite", "leave", "kick", "ban", "unban", "knock")


class RoomMemberHandler:
    def __init__(
        self,
        *,
        stores: Stores,
        accounts: AccountStore,
        directory: DirectoryStore,
        creation: EventCreationHandler,
        server_name: str,
    ) -> None:
        self.stores = stores
        self.accounts = accounts
        self.directory = directory
        self.creation = creation
        self.server_name = server_name
        # RemoteMembershipHandler when federation is on (set by the composition root).
        self.remote: Any = None

    def _is_mine(self, user_id: str) -> bool:
        return user_id.split(":", 1)[-1] == self.server_name

    async def resolve_room_id(self, room_id_or_alias: str) -> str:
        """A room ID for a room ID or an alias (M_NOT_FOUND otherwise)."""
        return (await self.resolve_room(room_id_or_alias))[0]

    async def resolve_room(self, room_id_or_alias: str) -> tuple[str, list[str]]:
        """(room ID, servers to join it through) for a room ID or an alias."""
        if room_id_or_alias.startswith("!"):
            return room_id_or_alias, []
        if room_id_or_alias.startswith("#"):
            if self.remote is not None and not self._is_mine(room_id_or_alias):
                room_id, servers = await self.remote.query_alias(room_id_or_alias)
                return room_id, servers
            found = await self.directory.get_room_for_alias(room_id_or_alias)
            if found is None:
                raise NotFound(f"Room alias {room_id_or_alias} not found")
            return found[0], []
        raise BadJson(f"{room_id_or_alias!r} is not a room ID or alias")

    async def update_membership(
        self,
        sender: str,
        target: str,
        room_id: str,
        action: str,
        *,
        reason: str | None = None,
        extra_content: dict[str, Any] | None = None,
        txn_id: str | None = None,
        device_id: str | None = None,
        remote_servers: Sequence[str] = (),
    ) -> Event:
        """``remote_servers``: where to join a room this server is not in (``via``)."""
        if action not in MEMBERSHIP_ACTIONS:
            raise BadJson(f"Unknown membership action {action!r}")
        membership = {"kick": "leave", "unban": "leave"}.get(action, action)
        if action == "unban":
            member = await self._current_member_event(room_id, target)
            if member is None or member.membership != "ban":
                raise Forbidden(f"{target} is not banned from this room")
        content: dict[str, Any] = dict(extra_content or {})
        content["membership"] = membership
        if reason is not None:
            content["reason"] = reason
        if membership in ("join", "invite", "knock") and target.endswith(":" + self.server_name):
            profile = await self.accounts.get_profile(target)
            if profile is not None:
                displayname, avatar_url = profile
                if displayname is not None:
                    content.setdefault("displayname", displayname)
                if avatar_url is not None:
                    content.setdefault("avatar_url", avatar_url)
        if membership == "join":
            # A join when already joined is a no-op per the spec's idempotence
            # unless the profile changed; avoid filling the DAG with repeats.
            existing = await self._current_member_event(room_id, target)
            if (
                existing is not None
                and existing.membership == "join"
                and _same_profile(existing.content, content)
            ):
                return existing
        event_dict = {
            "type": "m.room.member",
            "room_id": room_id,
            "sender": sender,
            "state_key": target,
            "content": content,
        }
        if self.remote is not None:
            remote_event = await self._remote_membership(
                event_dict, membership, remote_servers, txn_id, device_id
            )
            if remote_event is not None:
                if membership == "join":
                    await self.directory.unforget_room(target, room_id)
                return remote_event
        event = await self.creation.create_and_send(event_dict, txn_id=txn_id, device_id=device_id)
        if membership == "join" and target.endswith(":" + self.server_name):
            await self.directory.unforget_room(target, room_id)
        return event

    async def _remote_membership(
        self,
        event_dict: dict[str, Any],
        membership: str,
        remote_servers: Sequence[str],
        txn_id: str | None,
        device_id: str | None,
    ) -> Event | None:
        """The change done with another server's help, or None when it is a local one."""
        sender, target = event_dict["sender"], event_dict["state_key"]
        room_id, content = event_dict["room_id"], event_dict["content"]
        if membership == "invite" and not self._is_mine(target):
            event, context = await self.creation.create_event(
                event_dict, txn_id=txn_id, device_id=device_id
            )
            event = await self.remote.invite(event)
            await self.creation.send([(event, context)])
            return event
        if sender != target or membership not in ("join", "leave", "knock"):
            return None
        if await self.stores.members.is_host_joined(room_id, self.server_name):
            return None
        own = await self.stores.members.get_local_current_membership_for_user_in_room(
            target, room_id
        )
        own_event = None
        if own is not None and own.membership in ("invite", "knock"):
            own_event = await self.stores.events.get_event(own.event_id, allow_none=True)
        if membership == "leave":
            if own_event is None:
                return None
            return await self.remote.leave(target, room_id, own_event, content)
        servers = list(remote_servers)
        if own_event is not None:
            servers.append(own_event.sender.split(":", 1)[-1])
        if ":" in room_id:
            # Rooms 1-11 name the creating server; v12 room IDs have no domain.
            servers.append(room_id.split(":", 1)[-1])
        if all(s == self.server_name for s in servers):
            # Only our own name to try: a local join (or its error) it is.
            return None
        own_content = {k: v for k, v in content.items() if k != "membership"}
        if membership == "knock":
            return await self.remote.knock(target, room_id, servers, own_content)
        return await self.remote.join(target, room_id, servers, own_content)

    async def _current_member_event(self, room_id: str, user_id: str) -> Event | None:
        state = await self.stores.members.get_current_state_ids(room_id)
        event_id = state.get(("m.room.member", user_id))
        if event_id is None:
            return None
        return await self.stores.events.get_event(event_id, allow_none=True)

    async def forget(self, user_id: str, room_id: str) -> None:
        membership = await self.stores.members.get_local_current_membership_for_user_in_room(
            user_id, room_id
        )
        if membership is not None and membership.membership in ("join", "invite", "knock"):
            raise BadJson("You must leave the room before forgetting it")
        await self.directory.forget_room(user_id, room_id)


def _same_profile(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return all(old.get(k) == new.get(k) for k in ("displayname", "avatar_url"))
