"""Token-bucket rate limiting keyed by user, IP or anything hashable."""

from __future__ import annotations

from collections.abc import Hashable

from atrium.errors import LimitExceeded


class Ratelimiter:
    """Allows ``burst_count`` actions at once, refilling ``per_second``.

    ``clock`` is anything with ``time()`` in seconds (atrium.util.clock.Clock or
    a test clock).
    """

    def __init__(self, clock, per_second: float, burst_count: int, enabled: bool = True) -> None:
        self.clock = clock
        self.per_second = per_second
        self.burst_count = burst_count
        self.enabled = enabled
        # key -> (tokens left, time of last update)
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def _refill(self, key: Hashable, now: float) -> float:
        tokens, last = self._buckets.get(key, (float(self.burst_count), now))
        return min(float(self.burst_count), tokens + (now - last) * self.per_second)

    def check(self, key: Hashable, cost: float = 1.0) -> None:
        """Take ``cost`` tokens or raise LimitExceeded with retry_after_ms."""
        if not self.enabled:
            return
        now = self.clock.time()
        tokens = self._refill(key, now)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            wait = (cost - tokens) / self.per_second
            raise LimitExceeded(retry_after_ms=int(wait * 1000) + 1)
        self._buckets[key] = (tokens - cost, now)
        if len(self._buckets) > 100_000:
            self._prune(now)

    def _prune(self, now: float) -> None:
        # Buckets that have refilled completely carry no information.
        full = [
            k
            for k, (t, last) in self._buckets.items()
            if t + (now - last) * self.per_second >= self.burst_count
        ]
        for k in full:
            del self._buckets[k]
