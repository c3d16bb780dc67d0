"""Cache metrics: counters move on the right events and reach Prometheus."""

from __future__ import annotations

import uuid

from prometheus_client import REGISTRY
from twisted.internet import defer

from atrium.util.caches.descriptors import cached
from atrium.util.caches.lrucache import LruCache
from tests.util.deferred_helpers import success_result_of

_NAME = f"metrics_test_{uuid.uuid4().hex}"


class _Store:
    def __init__(self) -> None:
        self.gate: defer.Deferred[None] | None = None

    @cached(max_entries=2, name=_NAME)
    async def get_value(self, key: str) -> str:
        if self.gate is not None:
            await self.gate
        return key


def _sample(metric: str) -> float | None:
    return REGISTRY.get_sample_value(metric, {"name": _NAME})


def test_hits_misses_evictions_invalidations_and_size_are_exported() -> None:
    store = _Store()
    success_result_of(store.get_value("a"))  # miss
    success_result_of(store.get_value("a"))  # hit
    store.gate = gate = defer.Deferred[None]()
    store.get_value("b")  # miss, in flight
    store.get_value("b")  # joins the look-up in flight: a hit, not a second miss
    gate.callback(None)
    store.gate = None
    success_result_of(store.get_value("c"))  # miss, evicts "a"
    store.get_value.invalidate(("b",))
    assert _sample("atrium_cache_hits_total") == 2
    assert _sample("atrium_cache_misses_total") == 3
    assert _sample("atrium_cache_evictions_total") == 1
    assert _sample("atrium_cache_invalidations_total") == 1
    assert _sample("atrium_cache_size") == 1
    assert _sample("atrium_cache_max_size") == 2


def test_size_gauge_sums_live_caches_of_one_name() -> None:
    name = f"metrics_size_{uuid.uuid4().hex}"
    first: LruCache[int, int] = LruCache(10, name)
    second: LruCache[int, int] = LruCache(10, name)
    first.set(1, 1)
    second.set(1, 1)
    second.set(2, 2)
    assert REGISTRY.get_sample_value("atrium_cache_size", {"name": name}) == 3
    del second
    import gc

    gc.collect()
    assert REGISTRY.get_sample_value("atrium_cache_size", {"name": name}) == 1
