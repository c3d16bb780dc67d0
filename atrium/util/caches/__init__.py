"""In-memory caches for store reads, and their invalidation by name.

- ``lrucache.LruCache``: bounded LRU mapping (optionally a key tree).
- ``deferred_cache.DeferredCache``: LRU plus in-flight look-ups, invalidation-safe.
- ``descriptors.cached`` / ``cached_list``: per-instance caches for store methods.
- ``registry.CacheRegistry``: per-server name -> cache map used by replication.
- ``metrics``: Prometheus counters and gauges per cache name.
"""

from atrium.util.caches.deferred_cache import DeferredCache
from atrium.util.caches.descriptors import CachedMethod, cached, cached_list
from atrium.util.caches.lrucache import LruCache
from atrium.util.caches.registry import CacheRegistry, register_store_caches

__all__ = [
    "CacheRegistry",
    "CachedMethod",
    "DeferredCache",
    "LruCache",
    "cached",
    "cached_list",
    "register_store_caches",
]
