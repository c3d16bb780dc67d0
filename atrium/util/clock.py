"""``Clock``: the one way Atrium code reads time and schedules work.

Logic never imports the global reactor; it is handed a ``Clock`` built on an
``IReactorTime``. Production passes the real reactor, tests pass a
``twisted.internet.task.Clock`` and advance it by hand, so time-dependent code
(timeouts, retries, looping jobs) is tested without sleeping.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from twisted.internet import defer, task
from twisted.python.failure import Failure

logger = logging.getLogger(__name__)


class DelayedCall(Protocol):
    """The part of ``IDelayedCall`` Atrium uses (structural, so mypy needs no zope plugin)."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...

    def getTime(self) -> float: ...


class ReactorTime(Protocol):
    """The part of ``IReactorTime`` Atrium uses: the real reactor and ``task.Clock`` both fit."""

    def seconds(self) -> float: ...

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any: ...


class Clock:
    """Time and scheduling on top of one ``IReactorTime``."""

    def __init__(self, reactor: ReactorTime) -> None:
        self._reactor = reactor

    @property
    def reactor(self) -> ReactorTime:
        return self._reactor

    def time(self) -> float:
        """Seconds since the epoch (or since the fake clock was created)."""
        return self._reactor.seconds()

    def time_msec(self) -> int:
        """Milliseconds since the epoch: the unit of ``origin_server_ts`` and ``ts`` fields."""
        return int(self._reactor.seconds() * 1000)

    def sleep(self, seconds: float) -> defer.Deferred[None]:
        """An awaitable that fires after ``seconds``.

        Cancelling it cancels the scheduled call, so a cancelled sleeper leaves
        nothing behind in the reactor.
        """
        delayed: list[DelayedCall] = []

        def _cancel(_: defer.Deferred[None]) -> None:
            if delayed and delayed[0].active():
                delayed[0].cancel()

        d: defer.Deferred[None] = defer.Deferred(_cancel)
        delayed.append(self._reactor.callLater(seconds, d.callback, None))
        return d

    def call_later(
        self, delay: float, callback: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> DelayedCall:
        """Run ``callback(*args, **kwargs)`` after ``delay`` seconds."""
        return self._reactor.callLater(delay, callback, *args, **kwargs)

    @staticmethod
    def cancel_call_later(call: DelayedCall) -> None:
        """Cancel ``call`` if it has not run yet (no error if it already ran)."""
        if call.active():
            call.cancel()

    def looping_call(
        self,
        func: Callable[..., Awaitable[Any] | Any],
        interval: float,
        *args: Any,
        now: bool = False,
    ) -> task.LoopingCall:
        """Call ``func(*args)`` every ``interval`` seconds until ``.stop()`` is called.

        ``func`` may be ``async``; the next run is not scheduled before the
        previous one finished. An exception is logged and the loop carries on:
        a background job (pruning, retries) must not die silently because of one
        bad run.
        """

        def _run() -> defer.Deferred[None]:
            try:
                result = func(*args)
            except Exception:
                logger.exception("Looping call %r failed", func)
                return defer.succeed(None)
            d: defer.Deferred[Any]
            if inspect.isawaitable(result):
                d = defer.ensureDeferred(result)  # type: ignore[arg-type]
            else:
                d = defer.succeed(result)

            def _log_failure(failure: Failure) -> None:
                logger.error("Looping call %r failed: %s", func, failure.getTraceback())

            d.addErrback(_log_failure)
            d.addCallback(lambda _: None)
            return d

        call = task.LoopingCall(_run)
        call.clock = self._reactor  # type: ignore[assignment]
        # The Deferred from start() only fires when the loop stops; errors are
        # already handled in _run.
        call.start(interval, now=now)
        return call
