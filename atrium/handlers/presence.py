"""Presence, minimal (spec: client-server API "Presence").

Users set their own state (online / unavailable / offline) and status
message; setting it counts as activity. Presence is visible to the user
and to users sharing a room with them. There is no idle timer and no
federation: a user who never set a presence reads as ``offline``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from atrium.errors import Forbidden, InvalidParam, MissingParam, NotFound
from atrium.handlers.typing import Publish
from atrium.http.request import optional_text
from atrium.replication.streams.presence import row_for_presence
from atrium.storage.stores.presence import PresenceStore, UserPresence
from atrium.storage.stores.roommember import RoomMemberStore
from atrium.util.clock import Clock

PRESENCE_STATES = ("online", "unavailable", "offline")
MAX_STATUS_MSG_LENGTH = 1024
# Spec "Last active ago": an online user active this recently is currently_active.
CURRENTLY_ACTIVE_MS = 60_000


def presence_content(presence: UserPresence | None, now_ms: int) -> dict[str, Any]:
    """The content of an m.presence event / the GET status body."""
    if presence is None:
        return {"presence": "offline"}
    content: dict[str, Any] = {
        "presence": presence.state,
        "last_active_ago": max(0, now_ms - presence.last_active_ts),
    }
    if presence.status_msg is not None:
        content["status_msg"] = presence.status_msg
    if presence.state == "online":
        content["currently_active"] = content["last_active_ago"] < CURRENTLY_ACTIVE_MS
    return content


class PresenceHandler:
    def __init__(
        self,
        store: PresenceStore,
        members: RoomMemberStore,
        user_exists: Callable[[str], Awaitable[bool]],
        clock: Clock,
        publish: Publish,
    ) -> None:
        self.store = store
        self.members = members
        self._user_exists = user_exists
        self.clock = clock
        self._publish = publish

    async def set_state(self, requester_user_id: str, user_id: str, body: dict[str, Any]) -> None:
        """PUT /presence/{userId}/status."""
        if requester_user_id != user_id:
            raise Forbidden("Cannot set the presence of another user")
        state = body.get("presence")
        if state is None:
            raise MissingParam("Missing 'presence'")
        if not isinstance(state, str) or state not in PRESENCE_STATES:
            raise InvalidParam(f"'presence' must be one of {', '.join(PRESENCE_STATES)}")
        status_msg = optional_text(body, "status_msg", max_bytes=4 * MAX_STATUS_MSG_LENGTH)
        if status_msg is not None and len(status_msg) > MAX_STATUS_MSG_LENGTH:
            raise InvalidParam("'status_msg' is too long")
        presence = await self.store.set_presence(user_id, state, status_msg, self.clock.time_msec())
        await self._publish(
            "presence", self.store.get_current_token(), [row_for_presence(presence)]
        )

    async def set_syncing(self, user_id: str, syncing: bool) -> None:
        """A user started or stopped syncing (on any process; see atrium/master/).

        Spec "Presence": a syncing client makes its user online. Starting to
        sync brings an offline (or never seen) user online; stopping makes an
        online or unavailable user offline. The status message is kept.
        """
        current = await self.store.get_presence_for_user(user_id)
        state = current.state if current is not None else "offline"
        if syncing and state != "offline":
            return
        if not syncing and state == "offline":
            return
        presence = await self.store.set_presence(
            user_id,
            "online" if syncing else "offline",
            current.status_msg if current is not None else None,
            self.clock.time_msec(),
        )
        await self._publish(
            "presence", self.store.get_current_token(), [row_for_presence(presence)]
        )

    async def get_state(self, requester_user_id: str, user_id: str) -> dict[str, Any]:
        """GET /presence/{userId}/status: for yourself and users you share a room with."""
        if not await self._user_exists(user_id):
            raise NotFound("No presence for this user")
        if requester_user_id != user_id and not await self.shares_room(requester_user_id, user_id):
            raise Forbidden("You are not allowed to see their presence")
        presence = await self.store.get_presence_for_user(user_id)
        return presence_content(presence, self.clock.time_msec())

    async def shares_room(self, user_a: str, user_b: str) -> bool:
        rooms_a = await self.members.get_rooms_for_user(user_a)
        rooms_b = await self.members.get_rooms_for_user(user_b)
        return not rooms_a.isdisjoint(rooms_b)


def presence_event(presence: UserPresence | None, user_id: str, now_ms: int) -> dict[str, Any]:
    """An m.presence event as /sync's presence section carries it."""
    return {
        "type": "m.presence",
        "sender": user_id,
        "content": presence_content(presence, now_ms),
    }
