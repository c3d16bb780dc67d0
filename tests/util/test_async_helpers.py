"""ObservableDeferred, Linearizer, gather/concurrency helpers, timeouts."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer, task

from atrium.util.async_helpers import (
    Linearizer,
    ObservableDeferred,
    concurrently_execute,
    gather_results,
    stop_cancellation,
    timeout_deferred,
)
from atrium.util.clock import Clock
from tests.util.deferred_helpers import assert_no_result, failure_result_of, success_result_of


def test_observers_get_independent_deferreds_with_the_same_result() -> None:
    source: defer.Deferred[str] = defer.Deferred()
    observable = ObservableDeferred(source)
    first, second, third = (observable.observe() for _ in range(3))
    first.addCallback(lambda v: v + "!")
    second.cancel()
    failure_result_of(second, defer.CancelledError)
    source.callback("value")
    assert success_result_of(first) == "value!"
    assert success_result_of(third) == "value"
    assert success_result_of(observable.observe()) == "value"  # after the fact
    assert observable.has_succeeded()


def test_failure_reaches_every_observer() -> None:
    source: defer.Deferred[str] = defer.Deferred()
    observable = ObservableDeferred(source, consume_errors=True)
    first, second = observable.observe(), observable.observe()
    source.errback(ValueError("no"))
    failure_result_of(first, ValueError)
    failure_result_of(second, ValueError)
    failure_result_of(observable.observe(), ValueError)
    assert success_result_of(source) is None  # consumed: no "unhandled error" log


def test_observer_cancelling_another_observer_during_delivery_is_safe() -> None:
    source: defer.Deferred[int] = defer.Deferred()
    observable = ObservableDeferred(source)
    first, second = observable.observe(), observable.observe()
    first.addCallback(lambda _: second.cancel())
    source.callback(1)
    failure_result_of(second, defer.CancelledError)


def _enter(linearizer: Linearizer, key: str, log: list[str], tag: str) -> tuple[Any, Any]:
    """Start a coroutine that holds ``key`` until the returned release Deferred fires."""
    release: defer.Deferred[None] = defer.Deferred()

    async def body() -> None:
        async with linearizer.queue(key):
            log.append(f"in {tag}")
            await release
            log.append(f"out {tag}")

    return defer.ensureDeferred(body()), release


def test_linearizer_admits_one_at_a_time_in_arrival_order() -> None:
    lin = Linearizer("test")
    log: list[str] = []
    runs = [_enter(lin, "k", log, tag) for tag in "abc"]
    assert log == ["in a"]
    assert lin.is_queued("k")
    runs[0][1].callback(None)
    assert log == ["in a", "out a", "in b"]
    runs[1][1].callback(None)
    runs[2][1].callback(None)
    assert log == ["in a", "out a", "in b", "out b", "in c", "out c"]
    assert lin.holders("k") == 0 and not lin.is_queued("k")
    for done, _ in runs:
        success_result_of(done)


def test_linearizer_max_count_admits_that_many_and_keys_are_independent() -> None:
    lin = Linearizer("test", max_count=2)
    log: list[str] = []
    a, b, c = (_enter(lin, "k", log, tag) for tag in "abc")
    other = _enter(lin, "other", log, "x")
    assert log == ["in a", "in b", "in x"]
    b[1].callback(None)
    assert log[-2:] == ["out b", "in c"]
    for _, release in (a, c, other):
        release.callback(None)
    assert lin.holders("k") == 0


def test_cancelled_waiter_leaves_the_queue_without_blocking_others() -> None:
    lin = Linearizer("test")
    log: list[str] = []
    a = _enter(lin, "k", log, "a")
    b = _enter(lin, "k", log, "b")
    c = _enter(lin, "k", log, "c")
    b[0].cancel()
    failure_result_of(b[0], defer.CancelledError)
    a[1].callback(None)
    assert log == ["in a", "out a", "in c"]
    c[1].callback(None)
    assert lin.holders("k") == 0


def test_long_queue_of_synchronous_holders_does_not_overflow_the_stack() -> None:
    lin = Linearizer("test")
    gate: defer.Deferred[None] = defer.Deferred()
    done: list[int] = []

    async def first() -> None:
        async with lin.queue("k"):
            await gate

    async def quick(i: int) -> None:
        async with lin.queue("k"):
            done.append(i)

    head = defer.ensureDeferred(first())
    waiters = [defer.ensureDeferred(quick(i)) for i in range(5000)]
    gate.callback(None)
    success_result_of(head)
    assert done == list(range(5000))
    assert all(w.called for w in waiters)


def test_gather_results_keeps_order_and_raises_the_real_exception() -> None:
    slow: defer.Deferred[int] = defer.Deferred()
    d = gather_results(slow, defer.succeed(2))
    assert_no_result(d)
    slow.callback(1)
    assert success_result_of(d) == (1, 2)

    async def boom() -> int:
        raise KeyError("x")

    failure_result_of(gather_results(defer.succeed(1), boom()), KeyError)


def test_concurrently_execute_respects_the_limit() -> None:
    gates: dict[int, defer.Deferred[None]] = {i: defer.Deferred() for i in range(5)}
    running: set[int] = set()
    peak = 0

    async def work(i: int) -> None:
        nonlocal peak
        running.add(i)
        peak = max(peak, len(running))
        await gates[i]
        running.discard(i)

    d = defer.ensureDeferred(concurrently_execute(work, range(5), limit=2))
    assert running == {0, 1}
    for i in range(5):
        gates[i].callback(None)
    success_result_of(d)
    assert peak == 2


def test_concurrently_execute_stops_starting_work_after_a_failure() -> None:
    started: list[int] = []

    async def work(i: int) -> None:
        started.append(i)
        if i == 1:
            raise ValueError("bad arg")

    d = defer.ensureDeferred(concurrently_execute(work, range(10), limit=1))
    failure_result_of(d, ValueError)
    assert started == [0, 1]


def test_timeout_deferred_fails_with_timeout_and_cancels_the_work() -> None:
    fake = task.Clock()
    cancelled: list[bool] = []
    work: defer.Deferred[str] = defer.Deferred(lambda _: cancelled.append(True))
    d = timeout_deferred(work, 10, Clock(fake))
    fake.advance(9)
    assert_no_result(d)
    fake.advance(1)
    failure_result_of(d, defer.TimeoutError)
    assert cancelled == [True]


def test_timeout_deferred_passes_result_and_clears_the_timer() -> None:
    fake = task.Clock()
    work: defer.Deferred[str] = defer.Deferred()
    d = timeout_deferred(work, 10, Clock(fake))
    work.callback("ok")
    assert success_result_of(d) == "ok"
    assert fake.getDelayedCalls() == []


def test_timeout_deferred_fails_even_if_the_work_ignores_cancellation() -> None:
    fake = task.Clock()
    # A canceller that fires the Deferred with a value: cancellation "ignored".
    work: defer.Deferred[str] = defer.Deferred(lambda d: d.callback("late"))
    d = timeout_deferred(work, 1, Clock(fake))
    fake.advance(1)
    failure_result_of(d, defer.TimeoutError)


def test_stop_cancellation_shields_the_inner_work() -> None:
    work: defer.Deferred[str] = defer.Deferred()
    shielded = stop_cancellation(work)
    shielded.cancel()
    failure_result_of(shielded, defer.CancelledError)
    assert not work.called
    work.callback("done")


@pytest.mark.parametrize("bad", [0, -1])
def test_limits_below_one_are_rejected(bad: int) -> None:
    with pytest.raises(ValueError):
        Linearizer("x", max_count=bad)
