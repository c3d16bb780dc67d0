"""createRoom (spec: client-server API "Creation"): the initial events of a
room, built as one chain and persisted in one batch."""

from __future__ import annotations

import secrets
from typing import Any

from atrium.errors import BadJson, InvalidParam, RoomInUse, UnsupportedRoomVersion
from atrium.events.event import Event
from atrium.events.room_versions import DEFAULT_ROOM_VERSION, RoomVersion, get_room_version
from atrium.events.validation import is_valid_user_id
from atrium.handlers.directory import check_room_alias
from atrium.handlers.event_creation import EventCreationHandler
from atrium.handlers.membership import RoomMemberHandler
from atrium.state.context import EventContext
from atrium.storage.stores import Stores
from atrium.storage.stores.accounts import AccountStore
from atrium.storage.stores.directory import DirectoryStore

PRESETS: dict[str, dict[str, Any]] = {
    "private_chat": {
        "join_rule": "invite",
        "history_visibility": "shared",
        "guest_access": "can_join",
        "invitees_admin": False,
    },
    "trusted_private_chat": {
        "join_rule": "invite",
        "history_visibility": "shared",
        "guest_access": "can_join",
        "invitees_admin": True,
    },
    "public_chat": {
        "join_rule": "public",
        "history_visibility": "shared",
        "guest_access": "forbidden",
        "invitees_admin": False,
    },
}


def _default_power_levels(
    room_version: RoomVersion, creator: str, invitees: list[str], invitees_admin: bool
) -> dict[str, Any]:
    if room_version.privileged_creators:
        # v12: creators (trusted_private_chat invitees among them, see
        # create_room) have an infinite level and must not be listed.
        users: dict[str, int] = {}
    else:
        users = {creator: 100}
        if invitees_admin:
            users.update({u: 100 for u in invitees})
    power_levels: dict[str, Any] = {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "historical": 100,
        "notifications": {"room": 50},
    }
    if room_version.privileged_creators:
        # createRoom: "If the room's version is 12 or higher, the power level
        # for sending m.room.tombstone events MUST explicitly be higher than
        # state_default", so that only creators can upgrade by default.
        power_levels["events"]["m.room.tombstone"] = 150
    return power_levels


class RoomCreationHandler:
    def __init__(
        self,
        *,
        stores: Stores,
        accounts: AccountStore,
        directory: DirectoryStore,
        creation: EventCreationHandler,
        members: RoomMemberHandler,
        server_name: str,
    ) -> None:
        self.stores = stores
        self.accounts = accounts
        self.directory = directory
        self.creation = creation
        self.members = members
        self.server_name = server_name

    async def create_room(
        self, creator: str, body: dict[str, Any], device_id: str | None = None
    ) -> tuple[str, str | None]:
        """Create a room from a createRoom body; returns (room_id, alias)."""
        room_version = self._room_version(body)
        preset_name = body.get("preset")
        visibility = body.get("visibility", "private")
        if not isinstance(visibility, str) or visibility not in ("public", "private"):
            raise BadJson("'visibility' must be 'public' or 'private'")
        if preset_name is None:
            preset_name = "public_chat" if visibility == "public" else "private_chat"
        # A JSON list or object would not even be hashable for the look-up.
        if not isinstance(preset_name, str) or preset_name not in PRESETS:
            raise BadJson(f"Unknown preset {preset_name!r}")
        preset = PRESETS[preset_name]
        invitees = body.get("invite", [])
        if not isinstance(invitees, list) or not all(
            isinstance(u, str) and u.startswith("@") and ":" in u for u in invitees
        ):
            raise BadJson("'invite' must be a list of user IDs")
        initial_state = body.get("initial_state", [])
        if not isinstance(initial_state, list) or not all(
            isinstance(e, dict)
            and isinstance(e.get("type"), str)
            and isinstance(e.get("content", {}), dict)
            and isinstance(e.get("state_key", ""), str)
            for e in initial_state
        ):
            raise BadJson("'initial_state' must be a list of state events with type and content")
        creation_content = body.get("creation_content", {})
        pl_override = body.get("power_level_content_override")
        for key, value in (
            ("creation_content", creation_content),
            ("power_level_content_override", pl_override or {}),
        ):
            if not isinstance(value, dict):
                raise BadJson(f"'{key}' must be an object")
        for key in ("name", "topic", "room_alias_name"):
            if key in body and not isinstance(body[key], str):
                raise BadJson(f"'{key}' must be a string")

        alias = None
        if body.get("room_alias_name"):
            localpart = body["room_alias_name"]
            if ":" in localpart or "#" in localpart or not localpart.strip():
                raise InvalidParam("room_alias_name must be a plain localpart")
            alias = f"#{localpart}:{self.server_name}"
            # The same grammar and 255-byte limit as PUT /directory/room/{alias}.
            check_room_alias(alias)
            if await self.directory.get_room_for_alias(alias) is not None:
                raise RoomInUse("Room alias already taken")

        create_content = {
            k: v for k, v in creation_content.items() if k not in ("room_version", "creator")
        }
        create_content["room_version"] = room_version.identifier
        if not room_version.implicit_room_creator:
            create_content["creator"] = creator
        if room_version.privileged_creators:
            _set_additional_creators(create_content, creator, invitees, preset["invitees_admin"])

        # v12: the room ID is the create event's ID, known once it is built.
        room_id: str | None = None
        if not room_version.room_id_is_create_event_id:
            room_id = f"!{secrets.token_urlsafe(18)}:{self.server_name}"
        chain = _Chain(self.creation, room_id, room_version)
        create_event = await chain.add(creator, "m.room.create", "", create_content)
        for _ in range(5):
            if (
                room_id is not None
                or await self.stores.rooms.get_room(create_event.room_id) is None
            ):
                break
            # v12: another process built the same create event (same user,
            # content and millisecond): a later timestamp makes a new room.
            chain = _Chain(self.creation, room_id, room_version)
            create_event = await chain.add(creator, "m.room.create", "", create_content)
        else:
            raise RoomInUse("Could not pick an unused room ID; try again")
        room_id = chain.room_id = create_event.room_id
        await chain.add(
            creator, "m.room.member", creator, await self._member_content(creator, "join")
        )

        power_levels = _default_power_levels(
            room_version, creator, invitees, preset["invitees_admin"]
        )
        power_levels.update(pl_override or {})
        await chain.add(creator, "m.room.power_levels", "", power_levels)
        if alias is not None:
            await chain.add(creator, "m.room.canonical_alias", "", {"alias": alias})

        given = {(e["type"], e.get("state_key", "")) for e in initial_state}
        for event_type, content in (
            ("m.room.join_rules", {"join_rule": preset["join_rule"]}),
            ("m.room.history_visibility", {"history_visibility": preset["history_visibility"]}),
            ("m.room.guest_access", {"guest_access": preset["guest_access"]}),
        ):
            if (event_type, "") not in given:
                await chain.add(creator, event_type, "", content)
        for e in initial_state:
            if e["type"] in ("m.room.create", "m.room.power_levels", "m.room.member"):
                raise BadJson(f"{e['type']} cannot be set in initial_state")
            await chain.add(creator, e["type"], e.get("state_key", ""), e.get("content", {}))
        if "name" in body:
            await chain.add(creator, "m.room.name", "", {"name": body["name"]})
        if "topic" in body:
            await chain.add(creator, "m.room.topic", "", {"topic": body["topic"]})
        for invitee in invitees:
            content = await self._member_content(invitee, "invite")
            if body.get("is_direct"):
                content["is_direct"] = True
            await chain.add(creator, "m.room.member", invitee, content)

        await self.creation.send(chain.items)
        if alias is not None:
            if not await self.directory.create_alias(alias, room_id, creator):
                raise RoomInUse("Room alias already taken")
        if visibility == "public":
            await self.stores.rooms.set_room_is_public(room_id, True)
        return room_id, alias

    def _room_version(self, body: dict[str, Any]) -> RoomVersion:
        requested = body.get("room_version")
        if requested is None:
            return DEFAULT_ROOM_VERSION
        if not isinstance(requested, str):
            raise BadJson("'room_version' must be a string")
        version = get_room_version(requested)
        if version is None:
            raise UnsupportedRoomVersion(f"Room version {requested!r} is not supported")
        return version

    async def _member_content(self, user_id: str, membership: str) -> dict[str, Any]:
        content: dict[str, Any] = {"membership": membership}
        if user_id.endswith(":" + self.server_name):
            profile = await self.accounts.get_profile(user_id)
            if profile is not None:
                if profile[0] is not None:
                    content["displayname"] = profile[0]
                if profile[1] is not None:
                    content["avatar_url"] = profile[1]
        return content


def _set_additional_creators(
    create_content: dict[str, Any], creator: str, invitees: list[str], invitees_admin: bool
) -> None:
    """v12 createRoom: `additional_creators` from creation_content, plus the
    invitees of trusted_private_chat (deduplicated, in order), as the
    createRoom spec asks; the creator itself is implied by `sender`."""
    given = create_content.get("additional_creators", [])
    if not isinstance(given, list) or not all(
        isinstance(u, str) and is_valid_user_id(u) for u in given
    ):
        raise BadJson("'creation_content.additional_creators' must be a list of user IDs")
    wanted = list(given) + (list(invitees) if invitees_admin else [])
    additional = [u for u in dict.fromkeys(wanted) if u != creator]
    if additional:
        create_content["additional_creators"] = additional
    else:
        create_content.pop("additional_creators", None)


class _Chain:
    """New events each pointing at the previous one, not yet persisted."""

    def __init__(
        self, creation: EventCreationHandler, room_id: str | None, room_version: RoomVersion
    ) -> None:
        self.creation = creation
        self.room_id = room_id
        self.room_version = room_version
        self.items: list[tuple[Event, EventContext]] = []
        self.events: dict[str, Event] = {}
        self.contexts: dict[str, EventContext] = {}

    async def add(
        self, sender: str, event_type: str, state_key: str, content: dict[str, Any]
    ) -> Event:
        prev = [self.items[-1][0].event_id] if self.items else []
        event, context = await self.creation.create_event(
            {
                "type": event_type,
                "room_id": self.room_id,
                "sender": sender,
                "state_key": state_key,
                "content": content,
            },
            room_version=self.room_version,
            prev_event_ids=prev,
            prev_contexts=self.contexts,
            prev_events=self.events,
        )
        self.items.append((event, context))
        self.events[event.event_id] = event
        self.contexts[event.event_id] = context
        return event
