"""``SyncingUsers``: the master's view of which users are syncing where.

Fed with the replication commands every /sync-serving process sends (see
atrium/workers/user_sync.py), and with the master's own reporter directly:

- ``USER_SYNC <instance> <user> start|end``: the user started or stopped
  syncing on that instance;
- ``CLEAR_USER_SYNC <instance>``: every user of that instance stopped (it is
  shutting down);
- ``NAME <instance>``: the instance (re)connected. Its users are cleared: a
  process that restarted has none yet, and one that merely reconnected
  announces its users again right after (it hears its own REPLICATE);
- ``PING <ts> <instance>`` (and every command above): the instance is alive.
  An instance not heard for ``timeout`` seconds is taken for dead (killed,
  or cut off) and its users are cleared.

A user is syncing while at least one instance reports them. Each time that
changes, ``on_change(user_id, syncing)`` is called — one call at a time, in
the background, with the user's state at the time of the call (so a quick
stop-start pair does not flap presence), never blocking the replication loop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer

from atrium.replication.commands import (
    ClearUserSyncCommand,
    Command,
    NameCommand,
    PingCommand,
    UserSyncCommand,
)
from atrium.util.clock import Clock

logger = logging.getLogger(__name__)

OnChange = Callable[[str, bool], Awaitable[None]]


class SyncingUsers:
    def __init__(
        self, own_instance: str, clock: Clock, on_change: OnChange, timeout: float = 30.0
    ) -> None:
        self.own_instance = own_instance
        self.clock = clock
        self._on_change = on_change
        self.timeout = timeout
        # instance -> users syncing there.
        self._by_instance: dict[str, set[str]] = {}
        # instance -> when we last heard from it (clock seconds).
        self._last_seen: dict[str, float] = {}
        # Users whose syncing state changed and whose on_change is due; each
        # gets one call reflecting their state when it runs.
        self._dirty: dict[str, None] = {}
        # What on_change was last told per user (a change back before the
        # call runs needs no call at all).
        self._told: dict[str, bool] = {}
        self._running = False
        self._stopped = False
        self._loop: Any = None
        self._settled_waiters: list[defer.Deferred[None]] = []

    # -- reads ------------------------------------------------------------------------------
    def is_syncing(self, user_id: str) -> bool:
        return any(user_id in users for users in self._by_instance.values())

    def users_on(self, instance: str) -> frozenset[str]:
        return frozenset(self._by_instance.get(instance, ()))

    def is_idle(self) -> bool:
        """No presence update pending (tests wait for this)."""
        return not self._dirty and not self._running

    def settled(self) -> defer.Deferred[None]:
        """Fires once every presence update due so far has been made."""
        d: defer.Deferred[None] = defer.Deferred()
        if self.is_idle():
            d.callback(None)
        else:
            self._settled_waiters.append(d)
        return d

    # -- commands ---------------------------------------------------------------------------
    def handle(self, command: Command) -> None:
        """Replication listener for USER_SYNC, CLEAR_USER_SYNC, NAME and PING."""
        if self._stopped:
            # Shutting down: the database may be gone; presence is left as it is.
            return
        if isinstance(command, UserSyncCommand):
            self._seen(command.instance_name)
            if command.is_syncing:
                self._add(command.instance_name, command.user_id)
            else:
                self._remove(command.instance_name, command.user_id)
        elif isinstance(command, ClearUserSyncCommand):
            self._seen(command.instance_name)
            self.clear_instance(command.instance_name)
        elif isinstance(command, NameCommand):
            self._seen(command.name)
            if command.name != self.own_instance:
                self.clear_instance(command.name)
        elif isinstance(command, PingCommand) and command.instance_name is not None:
            self._seen(command.instance_name)

    def clear_instance(self, instance: str) -> None:
        users = self._by_instance.pop(instance, set())
        if users:
            logger.info("Clearing %d syncing users of %s", len(users), instance)
        for user_id in users:
            self._mark(user_id)

    # -- liveness ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = self.clock.looping_call(self.expire_silent, max(self.timeout / 4, 0.05))

    async def stop(self) -> None:
        self._stopped = True
        self._dirty.clear()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        await self.settled()

    def expire_silent(self) -> None:
        """Clear the users of every instance not heard for ``timeout`` seconds."""
        now = self.clock.time()
        for instance in list(self._by_instance):
            if instance == self.own_instance:
                continue
            if now - self._last_seen.get(instance, now) > self.timeout:
                logger.warning(
                    "No word from %s for %.0f s: taking it for dead", instance, self.timeout
                )
                self.clear_instance(instance)

    # -- internals --------------------------------------------------------------------------
    def _seen(self, instance: str) -> None:
        self._last_seen[instance] = self.clock.time()

    def _add(self, instance: str, user_id: str) -> None:
        users = self._by_instance.setdefault(instance, set())
        if user_id not in users:
            users.add(user_id)
            self._mark(user_id)

    def _remove(self, instance: str, user_id: str) -> None:
        users = self._by_instance.get(instance)
        if users is not None and user_id in users:
            users.discard(user_id)
            if not users:
                del self._by_instance[instance]
            self._mark(user_id)

    def _mark(self, user_id: str) -> None:
        self._dirty[user_id] = None
        if not self._running:
            self._running = True
            defer.ensureDeferred(self._run())

    async def _run(self) -> None:
        try:
            while self._dirty:
                user_id = next(iter(self._dirty))
                del self._dirty[user_id]
                syncing = self.is_syncing(user_id)
                if self._told.get(user_id, False) == syncing:
                    continue
                self._told[user_id] = syncing
                if not syncing:
                    del self._told[user_id]
                try:
                    await self._on_change(user_id, syncing)
                except Exception:
                    logger.exception("Updating presence of %s failed", user_id)
        finally:
            self._running = False
            waiters, self._settled_waiters = self._settled_waiters, []
            for d in waiters:
                d.callback(None)
