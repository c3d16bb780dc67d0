"""Micro-benchmark of the cache hot paths: prints nanoseconds per operation.

    /work/main/.venv/bin/python bench/cache_bench.py [iterations]

"hit" calls a ``@cached`` method whose value is cached (the returned Deferred
has already fired); "miss" calls it with a new key every time, so the async
function runs (completing synchronously, no I/O) and the LRU evicts, which is
the pure overhead a database read pays on top of its own cost.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

# Benchmark the checkout this script sits in, not whatever `atrium` is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from atrium.util.caches.descriptors import cached  # noqa: E402
from atrium.util.caches.lrucache import LruCache  # noqa: E402


class _Store:
    @cached(max_entries=1000, name="bench_get_value")
    async def get_value(self, key: int) -> int:
        return key * 2

    @cached(max_entries=1000, name="bench_get_pair", tree=True)
    async def get_pair(self, room: int, user: int) -> int:
        return room + user


def _ns_per_op(fn: Callable[[int], object], iterations: int, repeats: int = 5) -> float:
    """Best of ``repeats`` runs: the least disturbed by other load on the machine."""
    best = float("inf")
    for r in range(repeats):
        offset = r * iterations
        start = time.perf_counter_ns()
        for i in range(offset, offset + iterations):
            fn(i)
        best = min(best, (time.perf_counter_ns() - start) / iterations)
    return best


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    store = _Store()
    store.get_value(1)
    store.get_pair(1, 2)
    lru: LruCache[int, int] = LruCache(1000, "bench_lru")
    lru.set(1, 1)
    empty = _ns_per_op(lambda i: None, iterations)

    results = {
        "LruCache.get hit": _ns_per_op(lambda i: lru.get(1), iterations),
        "@cached hit (1 arg)": _ns_per_op(lambda i: store.get_value(1), iterations),
        "@cached hit (keyword)": _ns_per_op(lambda i: store.get_value(key=1), iterations),
        "@cached hit (tree, 2 args)": _ns_per_op(lambda i: store.get_pair(1, 2), iterations),
        "@cached miss (1 arg, evicting)": _ns_per_op(
            lambda i: store.get_value(i + 10_000_000), iterations
        ),
        "@cached miss (tree, evicting)": _ns_per_op(
            lambda i: store.get_pair(i + 10_000_000, i), iterations
        ),
    }
    print(f"best of 5 x {iterations} iterations, loop overhead {empty:.0f} ns subtracted")
    for label, ns in results.items():
        print(f"{label:32s} {ns - empty:8.0f} ns/op")


if __name__ == "__main__":
    main()
