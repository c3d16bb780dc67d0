"""``CacheRegistry``: find a server's caches by name, for replication.

A ``caches`` stream row (architecture section 3) names a cache and the keys
to drop; every process applies it through its own registry before it
advances its stream position and wakes the notifier. There is one registry
per server (built in the composition root and handed to the stores), never a
module global: tests run several servers in one process and an invalidation
on one must not touch another's caches.

Several caches may register under one name (e.g. two stores both owning a
``get_user_by_id``): all of them are invalidated. Over-invalidating is only
ever a performance cost, never a correctness one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import attrs

from atrium.util.caches.descriptors import CachedDescriptor

logger = logging.getLogger(__name__)

Key = tuple[Hashable, ...]


@attrs.frozen
class _Registration:
    invalidate_keys: Callable[[Key], None]
    invalidate_all: Callable[[], None]


class CacheRegistry:
    """Name -> invalidation callbacks for every cache of one server."""

    def __init__(self) -> None:
        self._caches: dict[str, list[_Registration]] = {}

    def register(
        self,
        name: str,
        invalidate_keys: Callable[[Key], None],
        invalidate_all: Callable[[], None],
    ) -> None:
        """Register a cache: ``invalidate_keys(key)`` drops one key, ``invalidate_all()`` all."""
        registrations = self._caches.setdefault(name, [])
        if registrations:
            logger.debug("Cache name %s registered %d times", name, len(registrations) + 1)
        registrations.append(_Registration(invalidate_keys, invalidate_all))

    def register_store(self, store: object) -> list[str]:
        """Register every ``@cached`` method of ``store`` under its cache name."""
        return register_store_caches(self, store)

    def names(self) -> list[str]:
        return sorted(self._caches)

    def __contains__(self, name: object) -> bool:
        return name in self._caches

    def invalidate(self, name: str, keys: Key | None) -> None:
        """Drop one key (a tuple of the cached method's arguments) or, with None, everything.

        For a tree cache a key shorter than the full key drops every key it
        prefixes. An unknown name is logged and ignored: another process may
        run a newer version with caches this one does not have.
        """
        registrations = self._caches.get(name)
        if registrations is None:
            logger.warning("Ignoring invalidation of unknown cache %r", name)
            return
        if keys is not None and not isinstance(keys, tuple):
            # Rows decoded from JSON carry lists; a bare string would be a bug upstream.
            if isinstance(keys, list):
                keys = tuple(keys)
            else:
                logger.error("Ignoring invalidation of %r with a non-tuple key %r", name, keys)
                return
        for registration in registrations:
            try:
                if keys is None:
                    registration.invalidate_all()
                else:
                    registration.invalidate_keys(keys)
            except Exception:
                # One broken cache must not stop the others (or the stream) from
                # being invalidated.
                logger.exception("Invalidating cache %r with %r failed", name, keys)

    def invalidate_keys(self, name: str, key_list: Iterable[Key]) -> None:
        """Drop several keys of one cache: the batched form of a ``caches`` row."""
        for keys in key_list:
            self.invalidate(name, keys)


def register_store_caches(registry: CacheRegistry, store: object) -> list[str]:
    """Register every ``@cached`` method of ``store`` (an instance); return the names used.

    This creates the per-instance caches now if they were not used yet, so
    an invalidation arriving before the first look-up is not lost on a cache
    created later (it would be empty anyway, but the registration must exist).
    """
    names: list[str] = []
    seen: set[str] = set()
    for klass in type(store).__mro__:
        for attr_name, value in vars(klass).items():
            # The most derived definition wins, as for attribute look-up.
            if attr_name in seen:
                continue
            seen.add(attr_name)
            if not isinstance(value, CachedDescriptor):
                continue
            method: Any = getattr(store, attr_name)
            if value.tree:
                # A full-length key is its own prefix, so invalidate_many
                # covers both exact keys and shorter prefixes.
                registry.register(value.cache_name, method.invalidate_many, method.invalidate_all)
            else:
                registry.register(value.cache_name, method.invalidate, method.invalidate_all)
            names.append(value.cache_name)
    return names
