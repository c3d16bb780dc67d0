"""Typing notifications (spec: client-server API "Typing Notifications").

The state is held in memory by the typing stream's writer: which users are
typing in each room and until when. Each change of a room's set of typing
users takes the next typing stream position and is published as one row
carrying the room's whole new set. A user stops typing when they say so or
when their timeout runs out (a timer on the Clock, so tests drive time).

Re-announcing "typing" while already typing only extends the timeout: it
changes nothing a client sees, so it neither moves the stream nor wakes
anyone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from twisted.internet import defer

from atrium.errors import Forbidden
from atrium.replication.streams._base import StreamRow, StreamUpdates
from atrium.replication.streams.typing import TypingStreamRow
from atrium.util.clock import Clock, DelayedCall

logger = logging.getLogger(__name__)

# Longest a single request may mark a user as typing; clients re-send every
# 20-30 s (spec recommendation), so this only bounds absurd timeouts.
MAX_TYPING_TIMEOUT_MS = 120_000
DEFAULT_TYPING_TIMEOUT_MS = 30_000

Publish = Callable[[str, int, Sequence[StreamRow]], Awaitable[None]]


class TypingHandler:
    def __init__(
        self,
        clock: Clock,
        is_joined: Callable[[str, str], Awaitable[bool]],
        publish: Publish,
    ) -> None:
        self.clock = clock
        self._is_joined = is_joined
        self._publish = publish
        # Start from the wall clock (ms) so positions stay increasing across
        # restarts: the in-memory counter is otherwise lost.
        self._serial = max(0, clock.time_msec())
        # room_id -> user_id -> timer that stops their typing.
        self._typing: dict[str, dict[str, DelayedCall]] = {}
        # room_id -> position of the room's last change.
        self._room_serial: dict[str, int] = {}
        # On processes that do not write the typing stream: room_id -> the
        # writer's last published set (from replication, see apply_replicated).
        self._replicated: dict[str, list[str]] = {}

    def current_token(self) -> int:
        return self._serial

    # -- changes -----------------------------------------------------------------
    async def set_typing(
        self,
        requester_user_id: str,
        target_user_id: str,
        room_id: str,
        typing: bool,
        timeout_ms: int,
    ) -> None:
        """PUT /rooms/{roomId}/typing/{userId}: only for yourself, only when joined."""
        if requester_user_id != target_user_id:
            raise Forbidden("Cannot set another user's typing state")
        if not await self._is_joined(target_user_id, room_id):
            raise Forbidden("You are not joined to this room")
        if typing:
            await self.started_typing(target_user_id, room_id, timeout_ms)
        else:
            await self.stopped_typing(target_user_id, room_id)

    async def started_typing(self, user_id: str, room_id: str, timeout_ms: int) -> None:
        timeout_ms = min(max(timeout_ms, 0), MAX_TYPING_TIMEOUT_MS)
        users = self._typing.setdefault(room_id, {})
        old_timer = users.get(user_id)
        if old_timer is not None:
            Clock.cancel_call_later(old_timer)
        users[user_id] = self.clock.call_later(timeout_ms / 1000.0, self._expire, user_id, room_id)
        if old_timer is None:
            await self._changed(room_id)

    async def stopped_typing(self, user_id: str, room_id: str) -> None:
        users = self._typing.get(room_id)
        if users is None or user_id not in users:
            return
        Clock.cancel_call_later(users.pop(user_id))
        if not users:
            del self._typing[room_id]
        await self._changed(room_id)

    def _expire(self, user_id: str, room_id: str) -> None:
        users = self._typing.get(room_id)
        if users is None or user_id not in users:
            return
        del users[user_id]
        if not users:
            del self._typing[room_id]
        d = defer.ensureDeferred(self._changed(room_id))
        d.addErrback(lambda f: logger.error("publishing typing expiry failed: %s", f.value))

    async def _changed(self, room_id: str) -> None:
        self._serial += 1
        serial = self._serial
        self._room_serial[room_id] = serial
        await self._publish(
            "typing", serial, [TypingStreamRow(room_id, self.typing_users(room_id))]
        )

    def apply_replicated(self, serial: int, room_id: str, user_ids: list[str]) -> None:
        """A typing row from the writer (this process only reads typing state)."""
        if serial < self._room_serial.get(room_id, 0):
            return
        if user_ids:
            self._replicated[room_id] = sorted(user_ids)
        else:
            self._replicated.pop(room_id, None)
        self._room_serial[room_id] = serial

    # -- reads -----------------------------------------------------------------------
    def typing_users(self, room_id: str) -> list[str]:
        """Who is typing in the room now (sorted, for stable output)."""
        if room_id in self._typing:
            return sorted(self._typing[room_id])
        return list(self._replicated.get(room_id, ()))

    def room_serial(self, room_id: str) -> int:
        """Position of the room's last typing change (0 if none since start)."""
        return self._room_serial.get(room_id, 0)

    def rooms_changed_since(self, room_ids: Iterable[str], since: int) -> dict[str, list[str]]:
        """room -> typing users, for each of ``room_ids`` changed after ``since``."""
        return {
            room_id: self.typing_users(room_id)
            for room_id in room_ids
            if self._room_serial.get(room_id, 0) > since
        }

    def get_updates(self, from_token: int, to_token: int, limit: int) -> StreamUpdates:
        """Catch-up rows: the current set of each room changed in (from, to]."""
        changed = sorted(
            (serial, room_id)
            for room_id, serial in self._room_serial.items()
            if from_token < serial <= to_token
        )
        rows: list[tuple[int, StreamRow]] = [
            (serial, TypingStreamRow(room_id, self.typing_users(room_id)))
            for serial, room_id in changed[:limit]
        ]
        limited = len(changed) > limit
        return StreamUpdates(rows, rows[-1][0] if limited else to_token, limited)


def typing_event(user_ids: list[str]) -> dict[str, Any]:
    """The m.typing ephemeral event of a room (spec: m.typing)."""
    return {"type": "m.typing", "content": {"user_ids": list(user_ids)}}
