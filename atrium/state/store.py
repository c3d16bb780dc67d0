"""What state resolution needs from storage, and the shape of a room state.

``StateMap`` is a room state as resolution sees it: (type, state_key) to
event ID. ``StateResolutionStore`` is the narrow read interface the
algorithms use; the database layer implements it, and
``atrium.state.memory_store`` implements it over events held in memory.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from atrium.events.event import Event

StateMap = dict[tuple[str, str], str]


class StateResolutionStore(Protocol):
    async def get_events(
        self, event_ids: Collection[str], allow_rejected: bool = False
    ) -> dict[str, Event]:
        """The events with these IDs that the store has.

        IDs the store does not know are absent from the result (never an
        error). Rejected events are left out unless ``allow_rejected``.
        """
        ...

    async def get_auth_chain_difference(self, room_id: str, state_sets: list[set[str]]) -> set[str]:
        """The auth difference of the state sets (room versions 2+).

        Each set is the event IDs of one state. The full auth chain of a set
        counts the set's own events (see atrium.state.auth_chain for why);
        the answer is the union of those chains minus their intersection.
        Implementations should use ``auth_chain.auth_chain_difference``,
        which stops walking as soon as the chains converge.
        """
        ...
