"""Which events a user may see (spec: client-server API "History visibility").

An event is visible when the room's history visibility *at that event* and
the user's membership at that event allow it:
- ``world_readable``: everyone;
- ``shared``: members, and anyone who is joined now;
- ``invited``: members from the moment they were invited;
- ``joined``: members from the moment they joined.
The state at each event comes from its state group (cached), fetched in one
batch for all events.
"""

from __future__ import annotations

from collections.abc import Sequence

from atrium.events.event import Event
from atrium.storage.stores import Stores

HISTORY_VISIBILITY = ("m.room.history_visibility", "")


async def filter_events_for_client(
    stores: Stores,
    user_id: str,
    events: Sequence[Event],
    currently_joined_rooms: frozenset[str] | None = None,
) -> list[Event]:
    """The events of ``events`` the user may see, in the same order."""
    events = [
        e for e in events if not e.internal_metadata.soft_failed and e.rejected_reason is None
    ]
    if not events:
        return []
    if currently_joined_rooms is None:
        currently_joined_rooms = await stores.members.get_rooms_for_user(user_id)
    groups = await stores.state.get_state_groups_for_events([e.event_id for e in events])
    member_key = ("m.room.member", user_id)
    state_by_group = {}
    for group in set(groups.values()):
        state = await stores.state.get_state_ids_for_group(
            group, types=[HISTORY_VISIBILITY, member_key]
        )
        state_by_group[group] = state
    needed = {eid for state in state_by_group.values() for eid in state.values()}
    state_events = await stores.events.get_events(needed) if needed else {}

    visible = []
    for event in events:
        state = state_by_group.get(groups.get(event.event_id, -1), {})
        vis_event = state_events.get(state.get(HISTORY_VISIBILITY, ""))
        visibility = "shared"
        if vis_event is not None:
            value = vis_event.content.get("history_visibility")
            if value in ("world_readable", "shared", "invited", "joined"):
                visibility = value
        member_event = state_events.get(state.get(member_key, ""))
        membership = member_event.membership if member_event is not None else None
        # A user always sees their own membership changes (their leave, their kick).
        own_membership = event.type == "m.room.member" and event.state_key == user_id
        if own_membership or _allowed(
            visibility, membership, event.room_id in currently_joined_rooms
        ):
            visible.append(event)
    return visible


def _allowed(visibility: str, membership: str | None, joined_now: bool) -> bool:
    if membership == "join" or visibility == "world_readable":
        return True
    if visibility == "shared":
        return joined_now
    if visibility == "invited":
        return membership == "invite"
    return False
