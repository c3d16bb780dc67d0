"""/sync sections for per-user data: account data (top-level and per joined
room, including m.push_rules and m.tag) and presence.

Initial syncs get everything: all account data (m.push_rules always, which
clients such as Element need to start) and the presence of the user and of
everyone sharing a joined room with them. Incremental syncs get what changed
in (since, now], plus everything for rooms newly joined.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from atrium.handlers.presence import presence_event
from atrium.handlers.push_rules import PushRulesHandler
from atrium.replication.streams.account_data import PUSH_RULES_TYPE
from atrium.storage.stores.account_data import AccountDataStore
from atrium.storage.stores.presence import PresenceStore
from atrium.storage.stores.roommember import RoomMemberStore
from atrium.sync.sections import SyncRequest
from atrium.sync.sections_ephemeral import add_room_events, apply_filter
from atrium.util.clock import Clock


def _events(data: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": t, "content": dict(c)} for t, c in sorted(data.items())]


class AccountDataSection:
    def __init__(self, store: AccountDataStore, push_rules: PushRulesHandler) -> None:
        self.store = store
        self.push_rules = push_rules

    async def fill(self, request: SyncRequest, response: dict[str, Any]) -> None:
        user_id = request.user_id
        joined = request.joined_room_ids
        global_data: dict[str, Mapping[str, Any]] = {}
        rooms: dict[str, dict[str, Mapping[str, Any]]] = {}
        if request.is_initial:
            everything = await self.store.get_account_data_for_user(user_id)
            global_data.update(everything.global_data)
            # Always present on an initial sync: clients need their push rules.
            global_data[PUSH_RULES_TYPE] = {}
            for room_id in joined:
                if room_id in everything.rooms:
                    rooms[room_id] = dict(everything.rooms[room_id])
        else:
            since, to_id = request.since_key("account_data"), request.now.account_data
            if since < to_id:
                changes = await self.store.get_updated_account_data_for_user(user_id, since, to_id)
                for changed_room, data_type, content in changes:
                    if changed_room is None:
                        global_data[data_type] = content
                    elif changed_room in joined:
                        rooms.setdefault(changed_room, {})[data_type] = content
            newly = joined & request.newly_joined_room_ids
            if newly:
                everything = await self.store.get_account_data_for_user(user_id)
                for room_id in newly:
                    if room_id in everything.rooms:
                        rooms.setdefault(room_id, {}).update(everything.rooms[room_id])
        if PUSH_RULES_TYPE in global_data:
            # The stored entry is only a change marker: serve the real rules.
            global_data[PUSH_RULES_TYPE] = await self.push_rules.push_rules_content(user_id)

        events = await apply_filter(request.filter, "filter_account_data", _events(global_data))
        if events:
            response.setdefault("account_data", {"events": []})["events"].extend(events)
        for room_id in sorted(rooms):
            await add_room_events(
                request,
                response,
                room_id,
                "account_data",
                "filter_room_account_data",
                _events(rooms[room_id]),
            )


class PresenceSection:
    def __init__(self, store: PresenceStore, members: RoomMemberStore, clock: Clock) -> None:
        self.store = store
        self.members = members
        self.clock = clock

    async def _users_sharing(self, room_ids: frozenset[str]) -> set[str]:
        users: set[str] = set()
        for room_id in room_ids:
            users.update(await self.members.get_users_in_room(room_id))
        return users

    async def fill(self, request: SyncRequest, response: dict[str, Any]) -> None:
        to_id = request.now.presence
        since = request.since_key("presence")
        if request.is_initial:
            full = await self._users_sharing(request.joined_room_ids) | {request.user_id}
            changed_for: set[str] = set()
        else:
            newly = request.joined_room_ids & request.newly_joined_room_ids
            full = await self._users_sharing(newly) if newly else set()
            if since < to_id:
                changed_for = await self._users_sharing(request.joined_room_ids)
                changed_for.add(request.user_id)
                changed_for -= full
            else:
                changed_for = set()
        updates = []
        if full:
            updates += await self.store.get_presence_for_users(full, 0, to_id)
        if changed_for:
            updates += await self.store.get_presence_for_users(changed_for, since, to_id)
        if not updates:
            return
        now_ms = self.clock.time_msec()
        latest = {p.user_id: p for p in sorted(updates, key=lambda p: p.stream_id)}
        events = [presence_event(latest[u], u, now_ms) for u in sorted(latest)]
        events = await apply_filter(request.filter, "filter_presence", events)
        if events:
            response.setdefault("presence", {"events": []})["events"].extend(events)
