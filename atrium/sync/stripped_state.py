"""rooms.invite and rooms.knock entries of /sync: stripped state (spec "Stripped state").

A room the user is invited to (or knocked on) is described by a few state
events reduced to ``type``, ``state_key``, ``content`` and ``sender``: the
create event, name, avatar, topic, join rules, canonical alias, encryption,
the inviter's membership, and the user's own invite/knock event last. They
are read from the state after the invite/knock event, batched for all rooms;
an invite that came from another server (an outlier without state here)
carries what that server sent in ``unsigned.invite_room_state``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from atrium.events.event import Event
from atrium.storage.stores import Stores
from atrium.storage.stores.roommember import RoomsForUser
from atrium.storage.stores.stream import StreamStore

MEMBER = "m.room.member"
STRIPPED_STATE_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.join_rules",
    "m.room.canonical_alias",
    "m.room.encryption",
)


# At most this many entries of a remote server's invite_room_state /
# knock_room_state are kept.
MAX_REMOTE_ROOM_STATE = 50


async def room_state_for_stripping(stores: Stores, room_id: str, sender: str) -> list[Event]:
    """The current state events that describe a room to an invitee or a
    knocker (STRIPPED_STATE_TYPES and ``sender``'s membership): what a
    server sends along as ``invite_room_state`` / ``knock_room_state``."""
    state = await stores.members.get_current_state_ids(room_id)
    keys = [(t, "") for t in STRIPPED_STATE_TYPES] + [(MEMBER, sender)]
    wanted = [state[k] for k in keys if k in state]
    found = await stores.events.get_events(wanted)
    return [found[e] for e in wanted if e in found]


def received_stripped_state(value: Any) -> list[dict[str, Any]]:
    """The usable entries of a remote server's ``invite_room_state`` or
    ``knock_room_state`` (full PDUs or stripped events), as stripped events."""
    if not isinstance(value, list):
        return []
    kept: list[dict[str, Any]] = []
    for entry in value[:MAX_REMOTE_ROOM_STATE]:
        if not isinstance(entry, dict):
            continue
        if not all(isinstance(entry.get(k), str) for k in ("type", "state_key", "sender")):
            continue
        if not isinstance(entry.get("content"), dict):
            continue
        kept.append({k: entry[k] for k in ("type", "state_key", "sender", "content")})
    return kept


def stripped(event: Event) -> dict[str, Any]:
    return {
        "type": event.type,
        "state_key": event.state_key,
        "content": event.content,
        "sender": event.sender,
    }


async def stripped_state_entries(
    stores: Stores, stream: StreamStore, memberships: Sequence[RoomsForUser], kind: str
) -> dict[str, dict[str, Any]]:
    """room_id -> ``{"<kind>_state": {"events": [...]}}`` for invites or knocks."""
    if not memberships:
        return {}
    own = await stores.events.get_events([m.event_id for m in memberships])
    groups = await stores.state.get_state_groups_for_events(list(own))
    states = await stream.get_state_for_groups(groups.values())
    wanted: dict[str, list[str]] = {}
    for m in memberships:
        event = own.get(m.event_id)
        if event is None or m.event_id not in groups:
            continue
        state = states[groups[m.event_id]]
        keys = [(t, "") for t in STRIPPED_STATE_TYPES] + [(MEMBER, event.sender)]
        wanted[m.room_id] = [state[k] for k in keys if k in state and state[k] != m.event_id]
    state_events = await stores.events.get_events([e for ids in wanted.values() for e in ids])
    entries: dict[str, dict[str, Any]] = {}
    for m in memberships:
        event = own.get(m.event_id)
        if event is None:
            continue
        if m.room_id in wanted:
            events = [stripped(state_events[e]) for e in wanted[m.room_id] if e in state_events]
        else:
            # An invite from another server: only what it sent along.
            sent = event.unsigned.get(f"{kind}_room_state") or []
            events = [s for s in sent if isinstance(s, dict)]
        events.append(stripped(event))
        entries[m.room_id] = {f"{kind}_state": {"events": events}}
    return entries
