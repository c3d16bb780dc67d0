"""Reads of room state and members (spec: client-server API "Getting events
for a room": GET /rooms/{roomId}/state, /state/{eventType}/{stateKey},
/members, /joined_members, /event/{eventId}, /joined_rooms and
/timestamp_to_event).

State is the room's current state for members and for anyone when the room
is world_readable; a user who left sees the state as of their leave (the
state after their leave event).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from atrium.errors import Forbidden, NotFound
from atrium.events.event import Event
from atrium.handlers.pagination import PaginationHandler
from atrium.handlers.pagination_token import PaginationToken
from atrium.handlers.room_access import RoomAccess, RoomAccessChecker
from atrium.handlers.visibility import filter_events_for_client
from atrium.storage.stores import Stores
from atrium.storage.stores.pagination import PaginationStore
from atrium.storage.stores.state import StateMap, StateTypes

MEMBER = "m.room.member"
MEMBERSHIPS = ("join", "invite", "knock", "leave", "ban")


class RoomReadHandler:
    def __init__(
        self,
        *,
        stores: Stores,
        pagination_store: PaginationStore,
        access: RoomAccessChecker,
        pagination: PaginationHandler,
    ) -> None:
        self.stores = stores
        self.pagination_store = pagination_store
        self.access = access
        self.pagination = pagination

    async def _visible_state_ids(
        self, access: RoomAccess, room_id: str, types: StateTypes | None = None
    ) -> StateMap:
        if access.leave_event_id is not None:
            state = await self.stores.state.get_state_ids_for_event(access.leave_event_id, types)
            return state or {}
        return await self.stores.members.get_filtered_current_state_ids(room_id, types)

    async def get_state(self, user_id: str, room_id: str) -> list[Event]:
        """The room state the user may see, as events."""
        access = await self.access.check_can_read(user_id, room_id)
        state = await self._visible_state_ids(access, room_id)
        return await self.stores.events.get_events_as_list(sorted(state.values()))

    async def get_state_event(
        self, user_id: str, room_id: str, event_type: str, state_key: str
    ) -> Event:
        """One state event the user may see; 404 M_NOT_FOUND when there is none."""
        access = await self.access.check_can_read(user_id, room_id)
        key = (event_type, state_key)
        state = await self._visible_state_ids(access, room_id, [key])
        event_id = state.get(key)
        event = await self.stores.events.get_event(event_id, allow_none=True) if event_id else None
        if event is None:
            raise NotFound(f"No {event_type} state with key {state_key!r} in this room")
        return event

    async def get_members(
        self,
        user_id: str,
        room_id: str,
        *,
        at: PaginationToken | None = None,
        membership: str | None = None,
        not_membership: str | None = None,
    ) -> list[Event]:
        """m.room.member events of the room (at a point, filtered by membership)."""
        access = await self.access.check_can_read(user_id, room_id)
        types: StateTypes = [(MEMBER, None)]
        if at is None:
            state = await self._visible_state_ids(access, room_id, types)
        else:
            position = await self.pagination.resolve_token(room_id, at)
            if access.clamp is not None:
                position = min(position, access.clamp)
            last = await self.pagination_store.get_last_timeline_event(room_id, position)
            state = {}
            if last is not None:
                state = await self.stores.state.get_state_ids_for_event(last.event_id, types) or {}
        events = await self.stores.events.get_events_as_list(sorted(state.values()))
        return [
            e
            for e in events
            if e.type == MEMBER
            and (membership is None or e.membership == membership)
            and (not_membership is None or e.membership != not_membership)
        ]

    async def get_joined_members(
        self, user_id: str, room_id: str
    ) -> dict[str, dict[str, str | None]]:
        """user_id -> {display_name, avatar_url}; only for current members (else 403)."""
        access = await self.access.check_can_read(user_id, room_id, allow_departed=False)
        if not access.joined:
            raise Forbidden("You must be joined to the room to list its joined members")
        profiles = await self.pagination_store.get_joined_members_with_profiles(room_id)
        return {
            member: {"display_name": name, "avatar_url": avatar}
            for member, (name, avatar) in profiles.items()
        }

    async def get_event(self, user_id: str, room_id: str, event_id: str) -> Event:
        """One event of the room the user may see (404 otherwise)."""
        access = await self.access.check_can_read(user_id, room_id)
        event, _ = await self.pagination.get_visible_event(user_id, room_id, event_id, access)
        return event

    async def get_joined_rooms(self, user_id: str) -> Collection[str]:
        return await self.stores.members.get_rooms_for_user(user_id)

    async def timestamp_to_event(
        self, user_id: str, room_id: str, ts: int, backwards: bool
    ) -> dict[str, Any]:
        """The visible event closest to ``ts`` in the given direction (404 if none).

        Looks at the nearest few candidates only; hidden ones are skipped.
        """
        access = await self.access.check_can_read(user_id, room_id)
        candidates = await self.pagination_store.get_event_for_timestamp(room_id, ts, backwards)
        if access.clamp is not None and candidates:
            positions = await self.pagination_store.get_event_positions([c[0] for c in candidates])
            candidates = [
                c for c in candidates if c[0] in positions and positions[c[0]][1] <= access.clamp
            ]
        events = await self.stores.events.get_events_as_list([c[0] for c in candidates])
        visible = await filter_events_for_client(self.stores, user_id, events)
        if not visible:
            raise NotFound("No event found near that timestamp")
        return {"event_id": visible[0].event_id, "origin_server_ts": visible[0].origin_server_ts}
