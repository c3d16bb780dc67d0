"""The room directory: local aliases and the published room list (spec:
client-server API "Room aliases", "Listing rooms", "Room discovery").

Permissions (the spec leaves them to the server, "Servers may choose to
implement additional access control checks"):
- creating an alias: a current member of the room;
- deleting an alias: its creator, a server admin, or a member whose power
  level lets them send ``m.room.canonical_alias`` (by default
  ``state_default``: moderators);
- publishing a room (or unpublishing it): a server admin or such a member.

Aliases of other servers cannot be resolved yet (no federation queries):
they read as M_NOT_FOUND.

The published list is ordered by joined members (largest first), then room
ID, and paged by keyset tokens naming the boundary room, so a page is stable
whichever rooms change elsewhere in the list.
"""

from __future__ import annotations

import base64
import bisect
import json
import re
from typing import Any

from atrium.auth.power_levels import get_send_level, get_user_power_level
from atrium.errors import BadJson, Forbidden, InvalidParam, NotFound, RoomInUse
from atrium.events.validation import has_room_id_shape
from atrium.handlers.auth import Requester
from atrium.handlers.room_access import RoomAccessChecker
from atrium.storage.stores import Stores
from atrium.storage.stores.directory import DirectoryStore, PublicRoomState

# Spec appendices "Room aliases": "#" localpart ":" server, at most 255 bytes.
_ALIAS = re.compile(r"#[^:\s]+:[^\s]+")
MAX_ALIAS_LENGTH = 255
CANONICAL_ALIAS = "m.room.canonical_alias"

# State the directory shows: type -> (content key, response key).
_SHOWN_STATE = {
    "m.room.name": ("name", "name"),
    "m.room.topic": ("topic", "topic"),
    "m.room.avatar": ("url", "avatar_url"),
    CANONICAL_ALIAS: ("alias", "canonical_alias"),
    "m.room.join_rules": ("join_rule", "join_rule"),
    "m.room.create": ("type", "room_type"),
}
_DIRECTORY_STATE = (*_SHOWN_STATE, "m.room.history_visibility", "m.room.guest_access")


def check_room_alias(alias: str) -> str:
    """The server name of a syntactically valid alias; M_INVALID_PARAM otherwise."""
    if (
        len(alias.encode("utf-8")) > MAX_ALIAS_LENGTH
        or not _ALIAS.fullmatch(alias)
        or "\x00" in alias
    ):
        raise InvalidParam(f"{alias[:300]!r} is not a valid room alias")
    return alias.split(":", 1)[1]


def check_room_id(room_id: str) -> None:
    # NUL: PostgreSQL cannot compare strings holding it.
    if not has_room_id_shape(room_id) or "\x00" in room_id:
        raise InvalidParam(f"{room_id[:300]!r} is not a room ID")


class DirectoryHandler:
    def __init__(
        self,
        *,
        stores: Stores,
        directory: DirectoryStore,
        access: RoomAccessChecker,
        server_name: str,
    ) -> None:
        self.stores = stores
        self.directory = directory
        self.access = access
        self.server_name = server_name

    # -- aliases --------------------------------------------------------------------
    def _check_local_alias(self, alias: str) -> None:
        if check_room_alias(alias) != self.server_name:
            raise InvalidParam("Only aliases of this server can be changed here")

    async def _require_room(self, room_id: str) -> None:
        if await self.stores.rooms.get_room_version_id(room_id) is None:
            raise NotFound(f"Unknown room {room_id}")

    async def create_alias(self, requester: Requester, alias: str, room_id: str) -> None:
        self._check_local_alias(alias)
        check_room_id(room_id)
        await self._require_room(room_id)
        if not requester.is_admin:
            joined = await self.stores.members.get_users_in_room(room_id)
            if requester.user_id not in joined:
                raise Forbidden("You must be joined to the room to give it an alias")
        if not await self.directory.create_alias(alias, room_id, requester.user_id):
            raise RoomInUse(f"Room alias {alias} already exists", code=409)

    async def get_alias(self, alias: str) -> dict[str, Any]:
        """{room_id, servers} for a local alias (M_NOT_FOUND for unknown or remote ones)."""
        server = check_room_alias(alias)
        found = (
            await self.directory.get_room_for_alias(alias) if server == self.server_name else None
        )
        if found is None:
            raise NotFound(f"Room alias {alias} not found")
        room_id = found[0]
        users = await self.stores.members.get_users_in_room(room_id)
        servers = {u.split(":", 1)[1] for u in users if ":" in u}
        # Our own server first: it certainly knows the room.
        servers.discard(self.server_name)
        return {"room_id": room_id, "servers": [self.server_name, *sorted(servers)]}

    async def delete_alias(self, requester: Requester, alias: str) -> None:
        self._check_local_alias(alias)
        found = await self.directory.get_room_for_alias(alias)
        if found is None:
            raise NotFound(f"Room alias {alias} not found")
        room_id, creator = found
        if creator != requester.user_id and not await self.can_change_room_list(requester, room_id):
            raise Forbidden("You may not delete this alias")
        if await self.directory.delete_alias(alias) is None:
            raise NotFound(f"Room alias {alias} not found")

    async def get_aliases_for_room(self, user_id: str, room_id: str) -> list[str]:
        """The room's local aliases, for members (or anyone when world_readable)."""
        check_room_id(room_id)
        await self.access.check_can_read(user_id, room_id, allow_departed=False)
        return list(await self.directory.get_aliases_for_room(room_id))

    async def can_change_room_list(self, requester: Requester, room_id: str) -> bool:
        """Server admins, and joined members allowed to send m.room.canonical_alias."""
        if requester.is_admin:
            return True
        state_ids = await self.stores.members.get_current_state_ids(room_id)
        member_id = state_ids.get(("m.room.member", requester.user_id))
        wanted = [
            event_id
            for key in (("m.room.create", ""), ("m.room.power_levels", ""))
            if (event_id := state_ids.get(key)) is not None
        ]
        if member_id is None:
            return False
        events = await self.stores.events.get_events([member_id, *wanted])
        member = events.get(member_id)
        if member is None or member.membership != "join":
            return False
        auth_state = {e.state_key_tuple(): e for e in events.values() if e.event_id in wanted}
        required = get_send_level(CANONICAL_ALIAS, "", auth_state.get(("m.room.power_levels", "")))
        return get_user_power_level(requester.user_id, auth_state) >= required

    # -- the published room list ------------------------------------------------------
    async def get_visibility(self, room_id: str) -> str:
        check_room_id(room_id)
        await self._require_room(room_id)
        return "public" if await self.stores.rooms.is_room_public(room_id) else "private"

    async def set_visibility(self, requester: Requester, room_id: str, visibility: Any) -> None:
        check_room_id(room_id)
        if visibility not in ("public", "private"):
            raise BadJson("'visibility' must be 'public' or 'private'")
        await self._require_room(room_id)
        if not await self.can_change_room_list(requester, room_id):
            raise Forbidden("You may not change whether this room is published")
        await self.stores.rooms.set_room_is_public(room_id, visibility == "public")

    async def get_public_rooms(
        self,
        *,
        limit: int | None = None,
        since: str | None = None,
        search_term: str | None = None,
        room_types: list[str | None] | None = None,
    ) -> dict[str, Any]:
        """A page of the published room list (PublicRoomsResponse)."""
        boundary = _parse_since(since) if since is not None else None
        rooms = await self.directory.get_public_rooms_state(_DIRECTORY_STATE)
        event_ids = [e for room in rooms for e in room.state.values()]
        events = await self.stores.events.get_events(event_ids)
        entries = [_entry(room, events) for room in rooms]
        if search_term:
            needle = search_term.casefold()
            entries = [e for e in entries if _matches(e, needle)]
        if room_types is not None:
            entries = [e for e in entries if e.get("room_type") in room_types]
        entries.sort(key=_sort_key)
        keys = [_sort_key(e) for e in entries]

        if boundary is None:
            begin = 0
            end = len(entries) if limit is None else min(len(entries), limit)
        else:
            forwards, key = boundary
            if forwards:
                begin = bisect.bisect_right(keys, key)
                end = len(entries) if limit is None else min(len(entries), begin + limit)
            else:
                end = bisect.bisect_left(keys, key)
                begin = 0 if limit is None else max(0, end - limit)
        page = entries[begin:end]
        result: dict[str, Any] = {"chunk": page, "total_room_count_estimate": len(entries)}
        if page and end < len(entries):
            result["next_batch"] = _make_since(True, keys[end - 1])
        if page and begin > 0:
            result["prev_batch"] = _make_since(False, keys[begin])
        return result


def _entry(room: PublicRoomState, events: dict[str, Any]) -> dict[str, Any]:
    def content(event_type: str) -> dict[str, Any]:
        event = events.get(room.state.get(event_type, ""))
        return event.content if event is not None else {}

    entry: dict[str, Any] = {
        "room_id": room.room_id,
        "num_joined_members": room.num_joined_members,
        "world_readable": content("m.room.history_visibility").get("history_visibility")
        == "world_readable",
        "guest_can_join": content("m.room.guest_access").get("guest_access") == "can_join",
    }
    for event_type, (field, out) in _SHOWN_STATE.items():
        value = content(event_type).get(field)
        if isinstance(value, str) and value:
            entry[out] = value
    return entry


def _matches(entry: dict[str, Any], needle: str) -> bool:
    return any(
        isinstance(entry.get(field), str) and needle in entry[field].casefold()
        for field in ("name", "topic", "canonical_alias")
    )


def _sort_key(entry: dict[str, Any]) -> tuple[int, str]:
    return (-entry["num_joined_members"], entry["room_id"])


def _make_since(forwards: bool, key: tuple[int, str]) -> str:
    raw = json.dumps(["f" if forwards else "b", -key[0], key[1]], separators=(",", ":"))
    return "p" + base64.urlsafe_b64encode(raw.encode("utf-8")).decode("ascii").rstrip("=")


def _parse_since(token: str) -> tuple[bool, tuple[int, str]]:
    """(forwards, sort key of the boundary room) from a publicRooms ``since`` token."""
    try:
        if not token.startswith("p"):
            raise ValueError
        data = token[1:]
        raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
        direction, joined, room_id = json.loads(raw)
        if direction not in ("f", "b") or not isinstance(room_id, str):
            raise ValueError
        if isinstance(joined, bool) or not isinstance(joined, int):
            raise ValueError
    except (ValueError, TypeError, UnicodeDecodeError):
        raise InvalidParam("Invalid 'since' token") from None
    return direction == "f", (-joined, room_id)
