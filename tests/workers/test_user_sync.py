"""UserSyncReporter: which USER_SYNC / CLEAR_USER_SYNC commands a /sync-serving
process sends, driven by a fake clock."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock as FakeReactor

from atrium.replication.commands import (
    ClearUserSyncCommand,
    ReplicateCommand,
    UserSyncCommand,
)
from atrium.util.clock import Clock
from atrium.workers.user_sync import UserSyncReporter

ALICE, BOB = "@alice:hs", "@bob:hs"


def _reporter(linger: float = 10.0):
    reactor = FakeReactor()
    sent: list[list] = []
    reporter = UserSyncReporter("sync1", lambda *c: sent.append(list(c)), Clock(reactor), linger)
    return reporter, reactor, sent


def _lines(sent: list[list]) -> list[str]:
    return [c.to_line() for message in sent for c in message]


def _run(coro):
    d = defer.ensureDeferred(coro)
    assert d.called
    return d.result


def test_first_sync_reports_start_once_and_end_only_after_the_linger():
    reporter, reactor, sent = _reporter()
    _run(reporter.sync_started(ALICE))
    _run(reporter.sync_started(ALICE))
    reporter.sync_stopped(ALICE)
    reporter.sync_stopped(ALICE)
    assert _lines(sent) == ["USER_SYNC sync1 @alice:hs start 0"]
    reactor.advance(9.9)
    assert len(sent) == 1
    reactor.advance(0.2)
    assert sent[-1] == [UserSyncCommand("sync1", ALICE, False, 10100)]
    assert reporter.syncing_users() == frozenset()


def test_back_to_back_long_polls_do_not_flap():
    reporter, reactor, sent = _reporter()
    for _ in range(5):
        _run(reporter.sync_started(BOB))
        reporter.sync_stopped(BOB)
        reactor.advance(3)
    assert _lines(sent) == ["USER_SYNC sync1 @bob:hs start 0"]
    reactor.advance(10)
    assert [c.is_syncing for m in sent for c in m] == [True, False]


def test_replicate_announces_every_syncing_user_again_in_one_message():
    reporter, _reactor, sent = _reporter()
    for user in (BOB, ALICE):
        _run(reporter.sync_started(user))
    sent.clear()
    reporter.reannounce(ReplicateCommand())
    assert len(sent) == 1
    assert [(c.user_id, c.is_syncing) for c in sent[0]] == [(ALICE, True), (BOB, True)]


def test_shutdown_clears_everything_with_one_command_and_cancels_pending_ends():
    reporter, reactor, sent = _reporter()
    _run(reporter.sync_started(ALICE))
    reporter.sync_stopped(ALICE)
    sent.clear()
    reporter.shutdown()
    reactor.advance(60)
    assert sent == [[ClearUserSyncCommand("sync1")]]


@pytest_twisted.ensureDeferred
async def test_sync_started_waits_for_what_send_returns():
    """On the master, the first /sync waits until presence is updated."""
    reactor = FakeReactor()
    done: defer.Deferred[None] = defer.Deferred()
    reporter = UserSyncReporter("master", lambda *c: done, Clock(reactor))
    started = defer.ensureDeferred(reporter.sync_started(ALICE))
    assert not started.called
    done.callback(None)
    await started
    # Already reported: a second request does not wait for anything.
    assert defer.ensureDeferred(reporter.sync_started(ALICE)).called
