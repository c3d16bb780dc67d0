"""``UserSyncReporter``: tells the master which users are syncing on this process.

Presence needs to know who is syncing (spec, client-server API "Presence":
a client that syncs is online), but /sync is served by sync workers while
presence is written by the master. So each process serving /sync counts the
/sync requests in flight per user and reports transitions with USER_SYNC:

- the first request of a user that is not reported yet sends
  ``USER_SYNC <me> <user> start <ts>`` at once;
- when the user's last request ends, ``end`` is sent only after ``linger``
  seconds without a new request: clients long-poll back to back, and the gap
  between two polls must not flap the user's presence;
- on hearing REPLICATE (this process reconnected, or any process, the master
  included, started) every reported user is announced again, so a restarted
  master rebuilds its view;
- ``shutdown()`` sends ``CLEAR_USER_SYNC <me>``: a clean stop clears this
  process's users at once (a killed process is found by its missing PINGs,
  see atrium/master/syncing_users.py).

The reporter does not know where its commands go: the composition root hands
it ``send`` (the replication bus on a worker, the master's tracker directly
on the master). ``send`` may return an awaitable, done when the commands have
taken effect: on the master, a user's first /sync then waits until their
presence is updated, so that response already carries (and its token covers)
the change it caused instead of being woken by it right after.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable

from atrium.replication.commands import ClearUserSyncCommand, Command, UserSyncCommand
from atrium.util.clock import Clock, DelayedCall

logger = logging.getLogger(__name__)

# Seconds between a user's last /sync ending and reporting them as stopped.
DEFAULT_LINGER = 10.0

Send = Callable[..., object]


class UserSyncReporter:
    def __init__(
        self, instance_name: str, send: Send, clock: Clock, linger: float = DEFAULT_LINGER
    ) -> None:
        self.instance_name = instance_name
        # send(*commands): one message with these commands, in order.
        self._send = send
        self.clock = clock
        self.linger = linger
        # user -> /sync requests in flight here.
        self._active: dict[str, int] = {}
        # Users the master was told are syncing here.
        self._reported: set[str] = set()
        self._pending_end: dict[str, DelayedCall] = {}

    # -- what the /sync servlet calls ------------------------------------------------------
    async def sync_started(self, user_id: str) -> None:
        self._active[user_id] = self._active.get(user_id, 0) + 1
        pending = self._pending_end.pop(user_id, None)
        if pending is not None:
            Clock.cancel_call_later(pending)
        if user_id not in self._reported:
            self._reported.add(user_id)
            result = self._send(self._command(user_id, True))
            if inspect.isawaitable(result):
                await result

    def sync_stopped(self, user_id: str) -> None:
        count = self._active.get(user_id, 0) - 1
        if count > 0:
            self._active[user_id] = count
            return
        self._active.pop(user_id, None)
        if user_id in self._reported and user_id not in self._pending_end:
            self._pending_end[user_id] = self.clock.call_later(self.linger, self._end, user_id)

    def syncing_users(self) -> frozenset[str]:
        """Users the master currently believes are syncing here."""
        return frozenset(self._reported)

    # -- replication ---------------------------------------------------------------------
    def reannounce(self, _command: Command | None = None) -> None:
        """Tell the master again about every user syncing here (on REPLICATE)."""
        if self._reported:
            self._send(*(self._command(u, True) for u in sorted(self._reported)))

    def shutdown(self) -> None:
        """This process stops serving /sync: the master clears all of its users."""
        for call in self._pending_end.values():
            Clock.cancel_call_later(call)
        self._pending_end.clear()
        self._reported.clear()
        self._active.clear()
        self._send(ClearUserSyncCommand(self.instance_name))

    async def start(self) -> None:
        """Service interface (the composition root starts and stops services)."""

    async def stop(self) -> None:
        self.shutdown()

    # -- internals -------------------------------------------------------------------------
    def _end(self, user_id: str) -> None:
        self._pending_end.pop(user_id, None)
        if user_id in self._active or user_id not in self._reported:
            return
        self._reported.discard(user_id)
        self._send(self._command(user_id, False))

    def _command(self, user_id: str, syncing: bool) -> UserSyncCommand:
        return UserSyncCommand(self.instance_name, user_id, syncing, self.clock.time_msec())
