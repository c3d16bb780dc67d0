"""Async building blocks on top of Twisted Deferreds.

- ``ObservableDeferred``: one result, many independent waiters.
- ``Linearizer``: a per-key async lock admitting up to ``max_count`` holders.
- ``gather_results`` / ``concurrently_execute``: run awaitables side by side.
- ``timeout_deferred`` / ``stop_cancellation``: control how waiting ends.

Everything here works in the reactor thread only; none of it is thread-safe.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import attrs
from twisted.internet import defer
from twisted.python.failure import Failure

from atrium.util.clock import Clock

logger = logging.getLogger(__name__)

T = TypeVar("T")
A = TypeVar("A")


class ObservableDeferred(Generic[T]):
    """Lets any number of callers wait for the result of one Deferred.

    Each call to ``observe()`` returns a fresh Deferred, so one observer adding
    callbacks, swallowing an error or cancelling its Deferred has no effect on
    the other observers or on the underlying work.
    """

    __slots__ = ("_observers", "_result")

    def __init__(self, deferred: defer.Deferred[T], consume_errors: bool = False) -> None:
        self._observers: list[defer.Deferred[T]] | None = []
        # (succeeded, value-or-Failure) once the underlying Deferred fired.
        self._result: tuple[bool, Any] | None = None

        def _fire(result: T | Failure) -> T | Failure | None:
            succeeded = not isinstance(result, Failure)
            self._result = (succeeded, result)
            # Detach the list first: a callback may call observe() again, and
            # must then get an already-fired Deferred rather than be appended
            # to a list nobody will walk again.
            observers, self._observers = self._observers, None
            for observer in observers or ():
                # An observer can be cancelled by another observer's callback
                # while we walk the list.
                if observer.called:
                    continue
                try:
                    if isinstance(result, Failure):
                        observer.errback(result)
                    else:
                        observer.callback(result)
                except Exception:
                    logger.exception("Observer of %r raised", self)
            if not succeeded and consume_errors:
                return None
            return result

        deferred.addBoth(_fire)

    def observe(self) -> defer.Deferred[T]:
        """A new Deferred that fires with the underlying result."""
        if self._result is not None:
            succeeded, value = self._result
            return defer.succeed(value) if succeeded else defer.fail(value)

        def _forget(d: defer.Deferred[T]) -> None:
            # Cancelling one observer only removes that observer.
            if self._observers is not None:
                try:
                    self._observers.remove(d)
                except ValueError:
                    pass

        observer: defer.Deferred[T] = defer.Deferred(_forget)
        assert self._observers is not None
        self._observers.append(observer)
        return observer

    def has_called(self) -> bool:
        return self._result is not None

    def has_succeeded(self) -> bool:
        return self._result is not None and self._result[0]

    def __repr__(self) -> str:
        state = "pending" if self._result is None else ("ok" if self._result[0] else "failed")
        return f"<ObservableDeferred {state} at {id(self):#x}>"


class _Waiter:
    """One coroutine waiting for a Linearizer slot."""

    __slots__ = ("deferred", "granted")

    def __init__(self) -> None:
        self.deferred: defer.Deferred[None] | None = None
        # Set once the slot has been handed over, before the Deferred fires.
        self.granted = False


@attrs.define
class _KeyState:
    """Holders and waiters of one key of a Linearizer."""

    holders: int = 0
    # Insertion-ordered for FIFO, and O(1) removal of a cancelled waiter.
    waiters: collections.OrderedDict[_Waiter, None] = attrs.Factory(collections.OrderedDict)


class Linearizer:
    """A per-key async lock: at most ``max_count`` holders per key, FIFO order.

    Usage::

        async with linearizer.queue(room_id):
            ...  # at most max_count coroutines for this room_id are here

    A waiter that is cancelled leaves the queue (or, if it had just been
    handed the slot, passes the slot on), so cancellation never wedges a key.
    Handing a slot to the next waiter is done in a loop rather than by
    recursion, so a long queue of waiters whose critical sections finish
    synchronously cannot overflow the stack.
    """

    def __init__(self, name: str, max_count: int = 1) -> None:
        if max_count < 1:
            raise ValueError("max_count must be at least 1")
        self.name = name
        self.max_count = max_count
        self._keys: dict[Hashable, _KeyState] = {}
        # Waiters that were handed a slot and still need waking.
        self._to_wake: collections.deque[defer.Deferred[None]] = collections.deque()
        self._waking = False

    def is_queued(self, key: Hashable) -> bool:
        """Whether anybody is waiting (not holding) for ``key``."""
        state = self._keys.get(key)
        return bool(state and state.waiters)

    def holders(self, key: Hashable) -> int:
        state = self._keys.get(key)
        return state.holders if state else 0

    @asynccontextmanager
    async def queue(self, key: Hashable) -> AsyncIterator[None]:
        await self._acquire(key)
        try:
            yield
        finally:
            self._release(key)

    def _acquire(self, key: Hashable) -> defer.Deferred[None]:
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _KeyState()
        if state.holders < self.max_count and not state.waiters:
            state.holders += 1
            return defer.succeed(None)

        waiter = _Waiter()

        def _on_cancel(_: defer.Deferred[None]) -> None:
            if waiter.granted:
                # The slot was handed to us but we never got to use it.
                self._release(key)
            else:
                del state.waiters[waiter]
                self._maybe_forget(key, state)

        waiter.deferred = defer.Deferred(_on_cancel)
        state.waiters[waiter] = None
        return waiter.deferred

    def _release(self, key: Hashable) -> None:
        state = self._keys[key]
        if state.waiters:
            # Hand the slot straight to the oldest waiter: holders stays the same.
            waiter, _ = state.waiters.popitem(last=False)
            waiter.granted = True
            assert waiter.deferred is not None
            self._wake(waiter.deferred)
        else:
            state.holders -= 1
            self._maybe_forget(key, state)

    def _maybe_forget(self, key: Hashable, state: _KeyState) -> None:
        if state.holders == 0 and not state.waiters and self._keys.get(key) is state:
            del self._keys[key]

    def _wake(self, waiter: defer.Deferred[None]) -> None:
        self._to_wake.append(waiter)
        if self._waking:
            # An outer _wake loop further up the stack will get to it.
            return
        self._waking = True
        try:
            while self._to_wake:
                d = self._to_wake.popleft()
                # A cancelled waiter already passed its slot on in _on_cancel.
                if not d.called:
                    d.callback(None)
        finally:
            self._waking = False


def _unwrap_first_error(failure: Failure) -> Failure:
    if isinstance(failure.value, defer.FirstError):
        sub: Failure = failure.value.subFailure
        return sub
    return failure


def gather_results(*awaitables: Awaitable[Any]) -> defer.Deferred[tuple[Any, ...]]:
    """Wait for all ``awaitables``; fire with their results as a tuple, in order.

    Fails with the first failure's own exception (not ``FirstError``).
    Cancelling the returned Deferred cancels all of them.
    """
    deferreds: list[defer.Deferred[Any]] = [
        defer.ensureDeferred(a)  # type: ignore[arg-type]
        for a in awaitables
    ]
    d = defer.gatherResults(deferreds, consumeErrors=True)
    d.addCallbacks(tuple, _unwrap_first_error)
    return d  # type: ignore[return-value]


async def concurrently_execute(
    func: Callable[[A], Awaitable[Any]], args: Iterable[A], limit: int
) -> None:
    """Run ``func(arg)`` for every arg, with at most ``limit`` running at once.

    After the first failure no new calls start; the ones running finish, then
    the first failure is raised. So when this returns or raises, nothing it
    started is still running.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    it = iter(args)
    stop = False

    async def _worker() -> None:
        nonlocal stop
        for arg in it:
            if stop:
                return
            try:
                await func(arg)
            except BaseException:
                stop = True
                raise

    workers = [defer.ensureDeferred(_worker()) for _ in range(limit)]
    results = await defer.DeferredList(workers, consumeErrors=True)
    for succeeded, value in results:
        if not succeeded:
            assert isinstance(value, Failure)
            value.raiseException()


def timeout_deferred(
    deferred: defer.Deferred[T], timeout: float, clock: Clock
) -> defer.Deferred[T]:
    """A Deferred with ``deferred``'s result, or ``defer.TimeoutError`` after ``timeout`` s.

    On timeout ``deferred`` is cancelled (so the work behind it can stop) and the
    returned Deferred fails with ``TimeoutError`` even if ``deferred`` ignores the
    cancellation. Cancelling the returned Deferred cancels ``deferred``.
    """
    timed_out = False

    def _cancel_inner(_: defer.Deferred[T]) -> None:
        deferred.cancel()

    result: defer.Deferred[T] = defer.Deferred(_cancel_inner)

    def _time_out() -> None:
        nonlocal timed_out
        timed_out = True
        deferred.cancel()
        if not result.called:
            result.errback(defer.TimeoutError(f"Timed out after {timeout}s"))

    delayed = clock.call_later(timeout, _time_out)

    def _done(value: T | Failure) -> None:
        if delayed.active():
            delayed.cancel()
        if result.called:
            return None
        if isinstance(value, Failure):
            if timed_out and value.check(defer.CancelledError):
                result.errback(defer.TimeoutError(f"Timed out after {timeout}s"))
            else:
                result.errback(value)
        else:
            result.callback(value)
        return None

    deferred.addBoth(_done)
    return result


def stop_cancellation(deferred: defer.Deferred[T]) -> defer.Deferred[T]:
    """A Deferred with ``deferred``'s result whose cancellation does not reach ``deferred``.

    Use it around work that must run to completion once started (a database
    transaction, a shared cache look-up): the caller that gives up gets a
    ``CancelledError`` straight away, the work carries on for everyone else.
    """
    observable = ObservableDeferred(deferred, consume_errors=True)
    return observable.observe()
