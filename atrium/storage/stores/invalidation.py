"""The one hook every store write goes through to invalidate caches.

Stores never poke another store's cache directly after a write: they call
``CacheInvalidator.invalidate(cache_name, keys)`` from ``txn.call_after``
(after the commit, so readers never re-cache data that is about to change).
Locally that is ``LocalCacheInvalidator`` (the server's ``CacheRegistry``);
the replication layer wraps it to also publish each call as ONE ``caches``
stream row, which is why a write names a cache and *all* its keys in one
call (architecture section 3: a room's current-state change is one row).
"""

from __future__ import annotations

from collections.abc import Collection, Hashable
from typing import Protocol

from atrium.util.caches import CacheRegistry

Key = tuple[Hashable, ...]


class CacheInvalidator(Protocol):
    def invalidate(self, cache_name: str, keys: Collection[Key] | None) -> None:
        """Drop ``keys`` (tuples of the cached method's arguments) of ``cache_name``.

        ``keys=None`` drops every entry of that cache.
        """

    def invalidate_local(self, cache_name: str, keys: Collection[Key]) -> None:
        """Drop ``keys`` on this process only.

        For changes every other process learns from a stream row that names
        them anyway (a membership event's events-stream row drops its user's
        room list), in the same step that wakes their readers: a caches-stream
        row would only duplicate that, ahead of the wake-up it belongs to.
        """


class LocalCacheInvalidator:
    """Invalidates this process's caches through its registry."""

    def __init__(self, registry: CacheRegistry) -> None:
        self.registry = registry

    def invalidate_local(self, cache_name: str, keys: Collection[Key]) -> None:
        self.invalidate(cache_name, keys)

    def invalidate(self, cache_name: str, keys: Collection[Key] | None) -> None:
        if keys is None:
            self.registry.invalidate(cache_name, None)
        else:
            self.registry.invalidate_keys(cache_name, keys)
