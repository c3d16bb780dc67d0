"""``StreamChangeCache``: which entities changed after a stream position, from memory.

An incremental /sync asks "which of this user's 500 rooms have new events
since ``since``?" and "did this user's memberships change?". This cache
answers from the rows this process has applied, without a database query,
and says "don't know" (treat everything as changed) when ``since`` is older
than what it remembers or the asked range reaches past what it has seen.

It is fed by the notifier (``SyncChangeTracker`` below) before long-polls
are woken, so a woken /sync always finds the change that woke it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable
from typing import Any


class StreamChangeCache:
    """entity -> the last stream position at which it changed (bounded, oldest dropped)."""

    def __init__(self, name: str, current_position: int, max_size: int = 100_000) -> None:
        self.name = name
        self.max_size = max_size
        # Changes at or before this position may have been forgotten.
        self.earliest_known = current_position
        # The highest position whose changes have all been recorded.
        self.max_seen = current_position
        # Ordered by position (oldest first): eviction drops the front.
        self._last_change: OrderedDict[str, int] = OrderedDict()

    def entity_has_changed(self, entity: str, position: int) -> None:
        previous = self._last_change.pop(entity, None)
        # Re-inserted at the end. Eviction raises earliest_known to the
        # evicted position, so an entry slightly out of order only makes the
        # cache more cautious, never wrong.
        self._last_change[entity] = position if previous is None else max(position, previous)
        while len(self._last_change) > self.max_size:
            _, evicted = self._last_change.popitem(last=False)
            self.earliest_known = max(self.earliest_known, evicted)
        self.advance(position)

    def advance(self, position: int) -> None:
        """Everything up to ``position`` has been recorded."""
        if position > self.max_seen:
            self.max_seen = position

    def knows(self, since: int, upto: int) -> bool:
        """Whether changes in (since, upto] are all known."""
        return since >= self.earliest_known and upto <= self.max_seen

    def has_entity_changed(self, entity: str, since: int, upto: int) -> bool:
        """True if ``entity`` changed after ``since`` (or we cannot tell)."""
        if not self.knows(since, upto):
            return True
        last = self._last_change.get(entity)
        return last is not None and last > since

    def get_entities_changed(
        self, entities: Collection[str], since: int, upto: int
    ) -> set[str] | None:
        """The entities that changed after ``since``; None when we cannot tell."""
        if not self.knows(since, upto):
            return None
        last_change = self._last_change
        return {e for e in entities if last_change.get(e, since) > since}


class SyncChangeTracker:
    """The rooms and users changed per events-stream position, for /sync.

    Registered as a notifier observer: for the events stream the notifier
    passes the rooms with new events and the users whose membership changed.
    """

    def __init__(self, current_position: int, max_size: int = 100_000) -> None:
        self.rooms = StreamChangeCache("sync_room_changes", current_position, max_size)
        self.memberships = StreamChangeCache("sync_membership_changes", current_position, max_size)

    def on_new_data(
        self, stream: str, token: Any, users: Iterable[str], rooms: Iterable[str]
    ) -> None:
        if stream != "events":
            return
        position = int(token)
        for room_id in rooms:
            self.rooms.entity_has_changed(room_id, position)
        for user_id in users:
            self.memberships.entity_has_changed(user_id, position)
        self.rooms.advance(position)
        self.memberships.advance(position)
