"""Clock: time, sleep, delayed and looping calls, driven by task.Clock."""

from __future__ import annotations

import logging

import pytest
from twisted.internet import defer, task

from atrium.util.clock import Clock
from tests.util.deferred_helpers import assert_no_result, failure_result_of, success_result_of


def test_time_and_time_msec_follow_the_reactor() -> None:
    fake = task.Clock()
    clock = Clock(fake)
    fake.advance(12.3456)
    assert clock.time() == pytest.approx(12.3456)
    assert clock.time_msec() == 12345


def test_sleep_fires_only_once_the_time_has_passed() -> None:
    fake = task.Clock()
    clock = Clock(fake)

    async def waiter() -> float:
        await clock.sleep(5)
        return clock.time()

    d = defer.ensureDeferred(waiter())
    fake.advance(4.9)
    assert_no_result(d)
    fake.advance(0.1)
    assert success_result_of(d) == pytest.approx(5)


def test_cancelled_sleep_leaves_no_delayed_call_behind() -> None:
    fake = task.Clock()
    d = Clock(fake).sleep(60)
    assert len(fake.getDelayedCalls()) == 1
    d.cancel()
    failure_result_of(d, defer.CancelledError)
    assert fake.getDelayedCalls() == []


def test_call_later_and_cancel_call_later() -> None:
    fake = task.Clock()
    clock = Clock(fake)
    ran: list[str] = []
    clock.call_later(1, ran.append, "one")
    two = clock.call_later(2, ran.append, "two")
    Clock.cancel_call_later(two)
    Clock.cancel_call_later(two)  # cancelling twice is harmless
    fake.advance(3)
    assert ran == ["one"]


def test_looping_call_runs_every_interval_and_survives_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = task.Clock()
    clock = Clock(fake)
    runs: list[float] = []

    async def job(tag: str) -> None:
        runs.append(clock.time())
        if len(runs) == 2:
            raise RuntimeError(f"{tag} broke")

    with caplog.at_level(logging.ERROR):
        call = clock.looping_call(job, 10, "prune")
        fake.pump([10, 10, 10])
    assert runs == [10, 20, 30]
    assert "prune broke" in caplog.text
    call.stop()
    fake.advance(10)
    assert runs == [10, 20, 30]


def test_looping_call_waits_for_an_async_run_to_finish() -> None:
    fake = task.Clock()
    clock = Clock(fake)
    gate: defer.Deferred[None] = defer.Deferred()
    started: list[float] = []

    async def slow() -> None:
        started.append(clock.time())
        if len(started) == 1:
            await gate

    call = clock.looping_call(slow, 1, now=True)
    fake.pump([1, 1, 1])
    assert started == [0]  # the first run is still going: no overlap
    gate.callback(None)
    fake.advance(1)
    assert len(started) == 2
    call.stop()
