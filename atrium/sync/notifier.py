"""The notifier: wakes /sync (and /events) long-polls when a stream advances.

It is told about new data only after the process has applied it (caches
invalidated, stream position advanced): see ``ReplicationDataHandler``. A
woken request therefore always reads fresh caches.

Listeners are indexed by user and by room. A request waits on a Deferred
that fires on the next relevant change; it then re-checks whether there is
anything to send for it, and waits again until its timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge
from twisted.internet import defer

from atrium.sync.token import StreamToken

logger = logging.getLogger(__name__)

T = TypeVar("T")

WAKEUPS = Counter("atrium_notifier_wakeups_total", "Long-poll wake-ups by stream", ["stream"])
LISTENERS = Gauge("atrium_notifier_listeners", "Requests currently waiting for new data")


class _Listener:
    """One waiting request: the user and rooms it cares about."""

    __slots__ = ("user_id", "rooms", "deferred")

    def __init__(self, user_id: str, rooms: frozenset[str]) -> None:
        self.user_id = user_id
        self.rooms = rooms
        self.deferred: defer.Deferred[None] = defer.Deferred()

    def wake(self) -> None:
        if not self.deferred.called:
            self.deferred.callback(None)


class Notifier:
    def __init__(self, clock: Any, current_token: Callable[[], StreamToken]) -> None:
        self.clock = clock
        # Reads the process's current (applied) position of every stream.
        self.current_token = current_token
        self._by_user: dict[str, set[_Listener]] = {}
        self._by_room: dict[str, set[_Listener]] = {}
        # Called for every new-data notification (e.g. app services, push).
        self._observers: list[Callable[[str, Any, Collection[str], Collection[str]], None]] = []

    def add_observer(
        self, fn: Callable[[str, Any, Collection[str], Collection[str]], None]
    ) -> None:
        self._observers.append(fn)

    def on_new_data(
        self, stream: str, token: Any, users: Iterable[str] = (), rooms: Iterable[str] = ()
    ) -> None:
        """Wake every request waiting for one of ``users`` or ``rooms``."""
        users, rooms = list(users), list(rooms)
        # Observers first: some keep in-memory indexes that woken requests
        # read (the sync change caches), and a woken request may run at once
        # (Deferred callbacks are synchronous).
        for observer in self._observers:
            try:
                observer(stream, token, users, rooms)
            except Exception:
                logger.exception("notifier observer failed")
        woken: set[_Listener] = set()
        for user_id in users:
            woken.update(self._by_user.get(user_id, ()))
        for room_id in rooms:
            woken.update(self._by_room.get(room_id, ()))
        if woken:
            WAKEUPS.labels(stream).inc(len(woken))
        for listener in woken:
            listener.wake()

    def _add(self, listener: _Listener) -> None:
        self._by_user.setdefault(listener.user_id, set()).add(listener)
        for room_id in listener.rooms:
            self._by_room.setdefault(room_id, set()).add(listener)
        LISTENERS.inc()

    def _remove(self, listener: _Listener) -> None:
        LISTENERS.dec()
        users = self._by_user.get(listener.user_id)
        if users is not None:
            users.discard(listener)
            if not users:
                del self._by_user[listener.user_id]
        for room_id in listener.rooms:
            listeners = self._by_room.get(room_id)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._by_room[room_id]

    async def wait_for_events(
        self,
        user_id: str,
        rooms: Collection[str],
        timeout_ms: int,
        check: Callable[[StreamToken], Awaitable[T]],
        is_empty: Callable[[T], bool],
        since: StreamToken | None = None,
    ) -> T:
        """Run ``check(current_token)`` until it returns something non-empty or time runs out.

        ``rooms`` are the rooms whose changes wake this request; changes
        addressed to ``user_id`` (to-device, account data, invites) wake it too.
        """
        deadline = self.clock.time() + timeout_ms / 1000.0
        while True:
            token = self.current_token()
            listener: _Listener | None = None
            if since is None or token.is_after(since):
                result = await check(token)
                if not is_empty(result) or timeout_ms <= 0:
                    return result
            else:
                result = None
            remaining = deadline - self.clock.time()
            if remaining <= 0:
                return result if result is not None else await check(token)
            listener = _Listener(user_id, frozenset(rooms))
            self._add(listener)
            try:
                # A change may have been applied between reading the token and
                # registering: re-check before sleeping.
                if self.current_token().is_after(token):
                    listener.wake()
                timer = self.clock.call_later(remaining, listener.wake)
                try:
                    await listener.deferred
                finally:
                    if timer.active():
                        timer.cancel()
            finally:
                self._remove(listener)
            since = token
