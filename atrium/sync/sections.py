"""The parts of a /sync response, each filled by its own section.

The rooms section runs first (timeline, state, summary, invites, leaves);
then every other section (account data, to-device, device lists, presence,
typing, receipts, one-time key counts...) adds its part to the response.
A domain adds itself to /sync by implementing ``SyncSection`` and being
listed by the composition root; the sync handler never imports a domain.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs

from atrium.sync.token import StreamToken


@attrs.define
class SyncRequest:
    """One /sync computation: who, from where, to where, with which filter."""

    user_id: str
    device_id: str
    # None for an initial sync.
    since: StreamToken | None
    # The position this response reaches (next_batch).
    now: StreamToken
    # The parsed filter (atrium.sync.filtering.Filter); sections read their
    # own part (account_data, presence, room.ephemeral, room.account_data...).
    filter: Any
    full_state: bool = False
    # Filled by the rooms section: rooms the user is joined to at `now`,
    # rooms newly joined since `since`, and rooms left since `since` (all
    # after the filter's room-level rooms/not_rooms).
    joined_room_ids: frozenset[str] = frozenset()
    newly_joined_room_ids: frozenset[str] = frozenset()
    newly_left_room_ids: frozenset[str] = frozenset()

    @property
    def is_initial(self) -> bool:
        return self.since is None

    def since_key(self, key: str) -> int:
        """The client's position in a non-events stream (0 on initial sync)."""
        return 0 if self.since is None else int(self.since.get(key))


def joined_room_entry(response: dict[str, Any], room_id: str) -> dict[str, Any]:
    """The response's entry for a joined room, created empty if missing."""
    rooms = response.setdefault("rooms", {}).setdefault("join", {})
    entry = rooms.get(room_id)
    if entry is None:
        entry = rooms[room_id] = {
            "timeline": {"events": [], "limited": False},
            "state": {"events": []},
            "ephemeral": {"events": []},
            "account_data": {"events": []},
            "unread_notifications": {},
            "summary": {},
        }
    return entry


class SyncSection(Protocol):
    """Adds one part to a /sync response."""

    async def fill(self, request: SyncRequest, response: dict[str, Any]) -> None:
        """Add this section's data for (request.since, request.now] to ``response``.

        Must leave ``response`` unchanged when there is nothing new, so an
        empty incremental sync can keep waiting.
        """
