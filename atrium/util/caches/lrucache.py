"""``LruCache``: a bounded mapping that forgets the least recently used entry.

Built on ``OrderedDict``, whose ``move_to_end`` and ``popitem(last=False)``
are O(1) and run in C, so a hit is one dict look-up plus one relink.
With ``tree=True`` keys must be tuples and a ``KeyTree`` alongside the dict
makes ``del_prefix`` proportional to what it removes, not to the cache size.

Not thread-safe: use it from the reactor thread only. Values are shared with
every caller that reads them and must be treated as immutable.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, Generic, TypeVar, overload

from atrium.util.caches.keytree import KeyTree
from atrium.util.caches.metrics import CacheMetrics, get_cache_metrics

KT = TypeVar("KT", bound=Hashable)
VT = TypeVar("VT")
T = TypeVar("T")

_MISSING: Any = object()


class LruCache(Generic[KT, VT]):
    """A bounded least-recently-used cache of at most ``max_size`` entries."""

    __slots__ = ("name", "max_size", "metrics", "_data", "_tree", "__weakref__")

    def __init__(self, max_size: int, name: str, tree: bool = False) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.name = name
        self.max_size = max_size
        self.metrics: CacheMetrics = get_cache_metrics(name)
        self.metrics.track(self)
        # Oldest first: the next entry to evict is at the front.
        self._data: OrderedDict[KT, VT] = OrderedDict()
        self._tree: KeyTree | None = KeyTree() if tree else None

    @property
    def is_tree(self) -> bool:
        return self._tree is not None

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        # Membership tests do not count as use: they do not refresh recency.
        return key in self._data

    @overload
    def get(self, key: KT) -> VT | None: ...

    @overload
    def get(self, key: KT, default: T, update_metrics: bool = True) -> VT | T: ...

    def get(self, key: KT, default: Any = None, update_metrics: bool = True) -> Any:
        """The value for ``key`` (marking it most recently used), else ``default``."""
        data = self._data
        try:
            value = data[key]
        except KeyError:
            if update_metrics:
                self.metrics.misses += 1
            return default
        data.move_to_end(key)
        if update_metrics:
            self.metrics.hits += 1
        return value

    def set(self, key: KT, value: VT) -> None:
        """Store ``value`` as the most recently used entry, evicting the oldest if full."""
        data = self._data
        if key in data:
            data[key] = value
            data.move_to_end(key)
            return
        if self._tree is not None:
            if not isinstance(key, tuple):
                raise TypeError(f"Keys of tree cache {self.name} must be tuples, got {key!r}")
            self._tree.add(key)
        data[key] = value
        if len(data) > self.max_size:
            self._evict()

    def _evict(self) -> None:
        data = self._data
        tree = self._tree
        evicted = 0
        while len(data) > self.max_size:
            old_key, _ = data.popitem(last=False)
            if tree is not None:
                tree.discard(old_key)  # type: ignore[arg-type]
            evicted += 1
        self.metrics.evictions += evicted

    def pop(self, key: KT, default: Any = None) -> Any:
        """Remove ``key`` (an invalidation); return its value or ``default``."""
        value = self._data.pop(key, _MISSING)
        if value is _MISSING:
            return default
        if self._tree is not None:
            self._tree.discard(key)  # type: ignore[arg-type]
        self.metrics.invalidations += 1
        return value

    def del_prefix(self, prefix: tuple[Hashable, ...]) -> int:
        """Remove every key starting with ``prefix`` (tree caches only); return how many."""
        if self._tree is None:
            raise TypeError(f"del_prefix needs a tree cache; {self.name} is not one")
        removed = self._tree.pop_prefix(prefix)
        data = self._data
        for key in removed:
            del data[key]  # type: ignore[arg-type]
        self.metrics.invalidations += len(removed)
        return len(removed)

    def invalidate_all(self) -> None:
        self.metrics.invalidations += len(self._data)
        self._data.clear()
        if self._tree is not None:
            self._tree.clear()

    def set_max_size(self, max_size: int) -> None:
        """Change the capacity, evicting straight away if it shrank."""
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self._evict()

    def keys(self) -> list[KT]:
        """A snapshot of the keys, least recently used first (for tests and debugging)."""
        return list(self._data)

    def __repr__(self) -> str:
        return f"<LruCache {self.name} {len(self._data)}/{self.max_size}>"
