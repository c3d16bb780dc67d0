"""Token-bucket rate limiting: bursts, refill over time, retry_after_ms."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock as ReactorClock

from atrium.errors import LimitExceeded
from atrium.util.clock import Clock
from atrium.util.ratelimit import Ratelimiter


def test_burst_then_limited_then_refilled():
    reactor = ReactorClock()
    clock = Clock(reactor)
    limiter = Ratelimiter(clock, per_second=2.0, burst_count=3)
    for _ in range(3):
        limiter.check("@a:x")
    with pytest.raises(LimitExceeded) as exc:
        limiter.check("@a:x")
    assert exc.value.code == 429
    assert 400 <= exc.value.retry_after_ms <= 501
    assert exc.value.to_json()["errcode"] == "M_LIMIT_EXCEEDED"
    # Other keys have their own bucket.
    limiter.check("@b:x")
    reactor.advance(0.5)
    limiter.check("@a:x")
    with pytest.raises(LimitExceeded):
        limiter.check("@a:x")


def test_disabled_limiter_never_limits():
    limiter = Ratelimiter(Clock(ReactorClock()), per_second=0.001, burst_count=1, enabled=False)
    for _ in range(100):
        limiter.check("k")
