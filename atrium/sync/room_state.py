"""Which state events a /sync room entry carries (pure logic, no I/O).

Spec (client-server API "Syncing", and GET /sync ``state``): the ``state``
of a room entry brings the client from the state it knows (nothing on an
initial sync, or for a room it newly joined, or with ``full_state``; the
state at ``since`` otherwise) to the state at the START of the returned
timeline. Events the timeline itself carries are never repeated in it.

One addition the spec's note on filtered timelines makes necessary: a state
change after the timeline start that the timeline does NOT carry (the
timeline filter or history visibility left it out) is sent in ``state``
too, or the client would never learn it.

Lazy-loading members (spec "Lazy-loading room members"): member events are
limited to the senders of the timeline events, the syncing user and the
room's heroes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from atrium.sync.token import RoomStreamToken

StateKey = tuple[str, str]
MEMBER = "m.room.member"


def state_for_entry(
    *,
    known: Mapping[StateKey, str],
    at_start: Mapping[StateKey, str],
    at_end: Mapping[StateKey, str] | None,
    timeline_event_ids: Collection[str],
) -> dict[StateKey, str]:
    """The (type, state_key) -> event_id entries to send as ``state``.

    ``known``: state the client already has; ``at_start``: state at the
    start of the timeline; ``at_end``: state at the end of the range, when
    some state change in it is missing from the timeline (else None).
    """
    state: dict[StateKey, str] = {}
    for key, event_id in at_start.items():
        if known.get(key) != event_id and event_id not in timeline_event_ids:
            state[key] = event_id
    if at_end is not None:
        for key, event_id in at_end.items():
            if (
                event_id not in timeline_event_ids
                and known.get(key) != event_id
                and at_start.get(key) != event_id
            ):
                state[key] = event_id
    return state


def lazy_load_members(
    state: Mapping[StateKey, str], wanted_members: Collection[str]
) -> dict[StateKey, str]:
    """``state`` with member events kept only for ``wanted_members``."""
    return {
        key: event_id
        for key, event_id in state.items()
        if key[0] != MEMBER or key[1] in wanted_members
    }


def membership_at(history: Sequence[Sequence[Any]], position: int | RoomStreamToken) -> str | None:
    """The last membership in ``history`` (oldest first) at ``position``.

    Entries are (membership, stream_ordering) or (membership, stream_ordering,
    instance_name). A vector token covers an entry when its writer's position
    reaches it (orderings of different writers interleave, so "the last
    covered entry" is not "the last entry below some number").
    """
    token = position if isinstance(position, RoomStreamToken) else RoomStreamToken(position)
    current = None
    for entry in history:
        membership, ordering = entry[0], entry[1]
        covered = token.includes(ordering, entry[2]) if len(entry) > 2 else ordering <= token.stream
        if covered:
            current = membership
    return current
