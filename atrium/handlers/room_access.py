"""Who may read a room at all, and up to where.

Spec: client-server API "History visibility" and the GET endpoints of
"Getting events for a room": a user currently joined reads the room; a user
who left (or was kicked or banned) reads it *as it was when they left*: no
event or state after their leave; anyone reads a room whose current
``m.room.history_visibility`` is ``world_readable``. Everyone else gets 403
M_FORBIDDEN (an unknown room looks the same, so room existence does not
leak). Which individual events are visible is then decided per event by
``atrium.handlers.visibility.filter_events_for_client``.
"""

from __future__ import annotations

import attrs

from atrium.errors import Forbidden
from atrium.storage.stores import Stores
from atrium.storage.stores.pagination import PaginationStore, RoomPosition

HISTORY_VISIBILITY = ("m.room.history_visibility", "")
DEPARTED = ("leave", "ban")


@attrs.frozen(slots=True)
class RoomAccess:
    """How a user may read one room.

    ``membership``/``member_event_id``: the user's latest membership (None if
    never a member). ``clamp``: for a departed user, the position of their
    leave: nothing after it may be returned. ``leave_event_id``: that event,
    whose state is the room state such a user sees.
    """

    membership: str | None
    member_event_id: str | None
    clamp: RoomPosition | None = None
    leave_event_id: str | None = None

    @property
    def joined(self) -> bool:
        return self.membership == "join"


class RoomAccessChecker:
    def __init__(self, stores: Stores, pagination: PaginationStore) -> None:
        self.stores = stores
        self.pagination = pagination

    async def is_world_readable(self, room_id: str) -> bool:
        """Whether the room's *current* history visibility is world_readable."""
        state = await self.stores.members.get_filtered_current_state_ids(
            room_id, [HISTORY_VISIBILITY]
        )
        event_id = state.get(HISTORY_VISIBILITY)
        if event_id is None:
            return False
        event = await self.stores.events.get_event(event_id, allow_none=True)
        return event is not None and event.content.get("history_visibility") == "world_readable"

    async def check_can_read(
        self, user_id: str, room_id: str, allow_departed: bool = True
    ) -> RoomAccess:
        """The user's access to the room, or 403 M_FORBIDDEN.

        A departed user in a room that is world_readable now is not clamped:
        they may read what any stranger may.
        """
        local = await self.stores.members.get_local_current_membership_for_user_in_room(
            user_id, room_id
        )
        membership = local.membership if local is not None else None
        event_id = local.event_id if local is not None else None
        if membership == "join":
            return RoomAccess(membership, event_id)
        if await self.is_world_readable(room_id):
            return RoomAccess(membership, event_id)
        if allow_departed and membership in DEPARTED and event_id is not None:
            found = await self.pagination.get_event_positions([event_id])
            if event_id in found and found[event_id][0] == room_id:
                return RoomAccess(membership, event_id, found[event_id][1], event_id)
        raise Forbidden(f"User {user_id} is not in room {room_id} and may not read it")
