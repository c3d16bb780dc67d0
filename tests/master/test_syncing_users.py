"""SyncingUsers: the master's view of who syncs where, and presence updates from it."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock as FakeReactor

from atrium.master.syncing_users import SyncingUsers
from atrium.replication.commands import (
    ClearUserSyncCommand,
    NameCommand,
    PingCommand,
    UserSyncCommand,
)
from atrium.util.clock import Clock

ALICE, BOB = "@alice:hs", "@bob:hs"


def _tracker(timeout: float = 30.0, block: bool = False):
    reactor = FakeReactor()
    calls: list[tuple[str, bool]] = []
    gate: list[defer.Deferred[None]] = []

    async def on_change(user_id: str, syncing: bool) -> None:
        calls.append((user_id, syncing))
        if block:
            d: defer.Deferred[None] = defer.Deferred()
            gate.append(d)
            await d

    tracker = SyncingUsers("master", Clock(reactor), on_change, timeout)
    return tracker, reactor, calls, gate


def start(instance: str, user: str) -> UserSyncCommand:
    return UserSyncCommand(instance, user, True, 0)


def end(instance: str, user: str) -> UserSyncCommand:
    return UserSyncCommand(instance, user, False, 0)


def test_a_user_is_syncing_while_any_instance_reports_them():
    tracker, _reactor, calls, _ = _tracker()
    tracker.handle(start("sync1", ALICE))
    tracker.handle(start("sync2", ALICE))
    tracker.handle(end("sync1", ALICE))
    assert tracker.is_syncing(ALICE)
    tracker.handle(end("sync2", ALICE))
    assert not tracker.is_syncing(ALICE)
    assert calls == [(ALICE, True), (ALICE, False)]


def test_clear_user_sync_clears_only_that_instance():
    tracker, _reactor, calls, _ = _tracker()
    tracker.handle(start("sync1", ALICE))
    tracker.handle(start("sync1", BOB))
    tracker.handle(start("sync2", BOB))
    tracker.handle(ClearUserSyncCommand("sync1"))
    assert tracker.users_on("sync1") == frozenset()
    assert calls == [(ALICE, True), (BOB, True), (ALICE, False)]


def test_a_reconnecting_instance_starts_with_no_users():
    tracker, _reactor, calls, _ = _tracker()
    tracker.handle(start("sync1", ALICE))
    tracker.handle(NameCommand("sync1"))
    assert not tracker.is_syncing(ALICE)
    assert calls[-1] == (ALICE, False)


def test_an_instance_not_heard_for_the_timeout_is_taken_for_dead():
    tracker, reactor, calls, _ = _tracker(timeout=3.0)
    defer.ensureDeferred(tracker.start())
    tracker.handle(start("sync1", ALICE))
    tracker.handle(start("sync2", BOB))
    for _ in range(10):
        reactor.advance(0.5)
        tracker.handle(PingCommand(0, "sync2"))  # sync2 keeps pinging, sync1 is silent
    assert not tracker.is_syncing(ALICE)
    assert tracker.is_syncing(BOB)
    assert (ALICE, False) in calls and (BOB, False) not in calls


def test_changes_are_applied_one_at_a_time_with_the_latest_state():
    tracker, _reactor, calls, gate = _tracker(block=True)
    tracker.handle(start("sync1", ALICE))
    # While alice's update runs, bob flaps and alice stops.
    tracker.handle(start("sync1", BOB))
    tracker.handle(end("sync1", BOB))
    tracker.handle(end("sync1", ALICE))
    assert calls == [(ALICE, True)]
    gate.pop(0).callback(None)
    # bob came and went before his turn: no call; alice's stop is applied.
    assert calls == [(ALICE, True), (ALICE, False)]
    gate.pop(0).callback(None)
    assert tracker.is_idle()
