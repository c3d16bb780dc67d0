"""Inspect Deferreds synchronously (no reactor): for tests that fire them by hand."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure


def success_result_of(d: defer.Deferred[Any]) -> Any:
    """The value ``d`` has already fired with; fails the test if pending or failed."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, f"{d!r} has not fired yet"
    result = results[0]
    if isinstance(result, Failure):
        raise AssertionError(f"{d!r} failed: {result.getTraceback()}")
    return result


def failure_result_of(d: defer.Deferred[Any], *expected: type[BaseException]) -> Failure:
    """The Failure ``d`` has already fired with (consumed); checks its type if given."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, f"{d!r} has not fired yet"
    result = results[0]
    assert isinstance(result, Failure), f"{d!r} succeeded with {result!r}"
    if expected:
        assert result.check(*expected), f"unexpected failure {result!r}"
    return result


def assert_no_result(d: defer.Deferred[Any]) -> None:
    assert not d.called, f"{d!r} fired too early"
