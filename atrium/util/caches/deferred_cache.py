"""``DeferredCache``: an ``LruCache`` of finished values plus the look-ups in flight.

This is the object behind every ``@cached`` method (its ``.cache``). It adds
two things to the LRU:

* De-duplication: while the value for a key is being computed, later callers
  for that key wait for the same computation (each with its own Deferred)
  instead of starting another database read.
* Invalidation safety: an invalidation that arrives while a look-up is in
  flight forgets the in-flight entry, so its result (possibly read before the
  write being invalidated) is handed to the callers already waiting but is NOT
  stored. The in-flight entry object acts as the per-key generation: a result
  is stored only if the entry that started it is still the current one for
  its key. A caller arriving after the invalidation starts a fresh look-up.
  This is what lets replication invalidate caches (architecture section 1,
  step 1) while database reads run.

Failures are passed to the waiting callers and never stored.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

from atrium.util.async_helpers import ObservableDeferred
from atrium.util.caches.keytree import KeyTree
from atrium.util.caches.lrucache import LruCache

VT = TypeVar("VT")

Key = tuple[Hashable, ...]

MISSING: Any = object()


class PendingEntry(Generic[VT]):
    """One computation in flight.

    ``observable`` hands the result to every waiting caller; it is ``None``
    only while the computation is being started.
    """

    __slots__ = ("source", "observable")

    def __init__(self) -> None:
        self.source: defer.Deferred[VT] | None = None
        self.observable: ObservableDeferred[VT] | None = None


def as_deferred(result: Any) -> defer.Deferred[Any]:
    """Turn what a cached function returned (coroutine, Deferred, value) into a Deferred."""
    if isinstance(result, defer.Deferred):
        return result
    if inspect.isawaitable(result):
        return defer.ensureDeferred(result)  # type: ignore[arg-type]
    return defer.succeed(result)


class DeferredCache(Generic[VT]):
    """Values keyed by tuples, with in-flight de-duplication and safe invalidation."""

    def __init__(self, name: str, max_entries: int, tree: bool = False) -> None:
        self.name = name
        self.lru: LruCache[Key, VT] = LruCache(max_entries, name, tree=tree)
        self.metrics = self.lru.metrics
        self.tree = tree
        self._pending: dict[Key, PendingEntry[VT]] = {}
        self._pending_tree: KeyTree | None = KeyTree() if tree else None

    def __len__(self) -> int:
        return len(self.lru)

    def get_if_cached(self, key: Key) -> Any:
        """The finished value for ``key`` or ``MISSING``; counts no metrics."""
        return self.lru.get(key, MISSING, False)

    def lookup(self, key: Key) -> defer.Deferred[VT] | None:
        """A Deferred for ``key`` if it is cached or in flight (a hit), else ``None``."""
        value = self.lru.get(key, MISSING, False)
        if value is not MISSING:
            self.metrics.hits += 1
            return defer.succeed(value)
        pending = self._pending.get(key)
        if pending is not None and pending.observable is not None:
            self.metrics.hits += 1
            return pending.observable.observe()
        return None

    def _register(self, key: Key) -> PendingEntry[VT]:
        # Registering happens before the computation starts, so an
        # invalidation arriving at any later point is seen by _complete.
        self.metrics.misses += 1
        entry: PendingEntry[VT] = PendingEntry()
        old = self._pending.get(key)
        self._pending[key] = entry
        if old is None and self._pending_tree is not None:
            self._pending_tree.add(key)
        return entry

    def begin(self, key: Key) -> defer.Deferred[VT]:
        """Register a computation for ``key`` (a miss); the caller finishes it by
        firing the returned Deferred with the value or a Failure."""
        entry = self._register(key)
        source: defer.Deferred[VT] = defer.Deferred()
        entry.source = source
        # Our callback goes first so the value is in the LRU before any
        # observer's callbacks run (they may look the key up again).
        source.addBoth(self._complete, key, entry)
        entry.observable = ObservableDeferred(source, consume_errors=True)
        return source

    def compute(self, key: Key, fn: Callable[[], Awaitable[VT] | VT]) -> defer.Deferred[VT]:
        """Start ``fn()`` as the computation for ``key`` (a miss); return this caller's Deferred."""
        entry = self._register(key)
        try:
            d = as_deferred(fn())
        except Exception:
            d = defer.fail()
        entry.source = d
        finished: list[VT | Failure] = []

        def _complete(result: VT | Failure) -> VT | Failure:
            finished.append(result)
            return self._complete(result, key, entry)

        d.addBoth(_complete)
        if finished:
            # Completed without waiting (no I/O): skip the observer machinery.
            result = finished[0]
            if isinstance(result, Failure):
                d.addErrback(lambda _: None)
                return defer.fail(result)
            return defer.succeed(result)
        entry.observable = ObservableDeferred(d, consume_errors=True)
        return entry.observable.observe()

    def _complete(self, result: VT | Failure, key: Key, entry: PendingEntry[VT]) -> Any:
        if self._pending.get(key) is entry:
            self._forget_pending(key)
            if not isinstance(result, Failure):
                self.lru.set(key, result)
        # else: invalidated (or replaced) while in flight; the value may be
        # stale, so only the callers already waiting get it.
        return result

    def _forget_pending(self, key: Key) -> None:
        del self._pending[key]
        if self._pending_tree is not None:
            self._pending_tree.discard(key)

    def in_flight(self, key: Key) -> bool:
        return key in self._pending

    def prefill(self, key: Key, value: VT) -> None:
        """Store a value known to be current (e.g. just written), superseding any look-up in flight."""
        if key in self._pending:
            self._forget_pending(key)
        self.lru.set(key, value)

    def invalidate(self, key: Key) -> None:
        """Forget ``key``, including a look-up of it in flight."""
        self.lru.pop(key)
        if key in self._pending:
            self._forget_pending(key)

    def invalidate_many(self, prefix: Key) -> None:
        """Forget every key starting with ``prefix`` (tree caches only)."""
        if self._pending_tree is None:
            raise TypeError(f"invalidate_many needs a tree cache; {self.name} is not one")
        self.lru.del_prefix(prefix)
        for key in self._pending_tree.pop_prefix(prefix):
            del self._pending[key]

    def invalidate_all(self) -> None:
        self.lru.invalidate_all()
        self._pending.clear()
        if self._pending_tree is not None:
            self._pending_tree.clear()

    def __repr__(self) -> str:
        return f"<DeferredCache {self.name} {len(self.lru)} cached, {len(self._pending)} in flight>"
