"""Prometheus metrics for every cache, labelled by cache name.

Exported series (label ``name``):
  atrium_cache_hits_total, atrium_cache_misses_total,
  atrium_cache_evictions_total (dropped because the cache was full),
  atrium_cache_invalidations_total (entries dropped by invalidation),
  atrium_cache_size, atrium_cache_max_size.

Why not one ``prometheus_client.Counter`` child per cache: its ``inc()`` takes
a lock and costs ~450 ns, more than the whole rest of a cache hit. Instead each
cache name has a ``CacheMetrics`` holding plain ints that the hot path bumps
(~30 ns), and one collector turns them into Prometheus samples at scrape time.
Caches run in the reactor thread only, so the ints need no lock.

The numbers are per process, as Prometheus metrics are: caches with the same
name (one per store instance, or one per test server in a test process) add
up under one label. ``CacheMetrics`` objects are never dropped, so counters
never go backwards; the size gauge sums the caches of that name still alive.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class _SizedCache(Protocol):
    max_size: int

    def __len__(self) -> int: ...


class CacheMetrics:
    """Counters of every cache sharing one name."""

    __slots__ = ("name", "hits", "misses", "evictions", "invalidations", "_caches", "__weakref__")

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.invalidations = 0
        # Live caches under this name, for the size gauges.
        self._caches: weakref.WeakSet[_SizedCache] = weakref.WeakSet()

    def track(self, cache: _SizedCache) -> None:
        self._caches.add(cache)

    def size(self) -> int:
        return sum(len(c) for c in list(self._caches))

    def max_size(self) -> int:
        return sum(c.max_size for c in list(self._caches))


_METRICS: dict[str, CacheMetrics] = {}


def get_cache_metrics(name: str) -> CacheMetrics:
    """The (process-wide) counters for cache ``name``, created on first use."""
    metrics = _METRICS.get(name)
    if metrics is None:
        metrics = _METRICS[name] = CacheMetrics(name)
    return metrics


class _CacheCollector(Collector):
    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        families = {
            "hits": CounterMetricFamily(
                "atrium_cache_hits", "Look-ups answered from the cache", labels=["name"]
            ),
            "misses": CounterMetricFamily(
                "atrium_cache_misses", "Look-ups that had to compute the value", labels=["name"]
            ),
            "evictions": CounterMetricFamily(
                "atrium_cache_evictions",
                "Entries dropped because the cache was full",
                labels=["name"],
            ),
            "invalidations": CounterMetricFamily(
                "atrium_cache_invalidations", "Entries dropped by invalidation", labels=["name"]
            ),
        }
        size = GaugeMetricFamily("atrium_cache_size", "Entries in the cache", labels=["name"])
        max_size = GaugeMetricFamily(
            "atrium_cache_max_size", "Configured capacity of the cache", labels=["name"]
        )
        for name, metrics in list(_METRICS.items()):
            for attr, family in families.items():
                family.add_metric([name], getattr(metrics, attr))
            size.add_metric([name], metrics.size())
            max_size.add_metric([name], metrics.max_size())
        yield from families.values()
        yield size
        yield max_size


REGISTRY.register(_CacheCollector())
