"""LruCache: eviction order, recency, tree prefix removal, metrics bookkeeping."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atrium.util.caches.lrucache import LruCache


def _name() -> str:
    # Metrics are per cache name and process-wide: a fresh name per test.
    return f"test_lru_{uuid.uuid4().hex}"


def test_full_cache_evicts_least_recently_set_entry() -> None:
    cache: LruCache[str, int] = LruCache(2, _name())
    cache.set("a", 1)
    cache.set("b", 2)
    cache.set("c", 3)
    assert "a" not in cache
    assert cache.get("b") == 2 and cache.get("c") == 3
    assert len(cache) == 2


def test_get_refreshes_recency_so_the_other_entry_is_evicted() -> None:
    cache: LruCache[str, int] = LruCache(2, _name())
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.get("a") == 1  # "b" is now the oldest
    cache.set("c", 3)
    assert "b" not in cache
    assert cache.keys() == ["a", "c"]


def test_setting_an_existing_key_replaces_value_and_refreshes_recency() -> None:
    cache: LruCache[str, int] = LruCache(2, _name())
    cache.set("a", 1)
    cache.set("b", 2)
    cache.set("a", 10)
    cache.set("c", 3)
    assert cache.get("a") == 10
    assert "b" not in cache


def test_contains_does_not_refresh_recency() -> None:
    cache: LruCache[str, int] = LruCache(2, _name())
    cache.set("a", 1)
    cache.set("b", 2)
    assert "a" in cache
    cache.set("c", 3)
    assert "a" not in cache


def test_get_returns_default_on_miss_and_pop_removes() -> None:
    cache: LruCache[str, int] = LruCache(5, _name())
    marker = object()
    assert cache.get("x", marker) is marker
    cache.set("x", 1)
    assert cache.pop("x") == 1
    assert cache.pop("x", "gone") == "gone"
    assert "x" not in cache


def test_invalidate_all_empties_the_cache() -> None:
    cache: LruCache[str, int] = LruCache(5, _name())
    for i in range(5):
        cache.set(str(i), i)
    cache.invalidate_all()
    assert len(cache) == 0
    assert cache.get("1") is None


def test_shrinking_max_size_evicts_oldest_immediately() -> None:
    cache: LruCache[int, int] = LruCache(5, _name())
    for i in range(5):
        cache.set(i, i)
    cache.set_max_size(2)
    assert cache.keys() == [3, 4]


def test_del_prefix_removes_exactly_the_keys_under_the_prefix() -> None:
    cache: LruCache[tuple[str, ...], int] = LruCache(100, _name(), tree=True)
    cache.set(("!r1", "@a"), 1)
    cache.set(("!r1", "@b"), 2)
    cache.set(("!r2", "@a"), 3)
    cache.set(("!r1x", "@a"), 4)  # shares a string prefix, not a tuple prefix
    assert cache.del_prefix(("!r1",)) == 2
    assert sorted(cache.keys()) == [("!r1x", "@a"), ("!r2", "@a")]
    # Removing a full key as a prefix removes just that key.
    assert cache.del_prefix(("!r2", "@a")) == 1
    assert cache.keys() == [("!r1x", "@a")]
    assert cache.del_prefix(("!nope",)) == 0


def test_del_prefix_after_eviction_does_not_resurrect_or_double_count() -> None:
    cache: LruCache[tuple[str, str], int] = LruCache(2, _name(), tree=True)
    cache.set(("r", "1"), 1)
    cache.set(("r", "2"), 2)
    cache.set(("s", "1"), 3)  # evicts ("r", "1") from the dict AND the tree
    assert cache.del_prefix(("r",)) == 1
    assert cache.keys() == [("s", "1")]
    assert len(cache) == 1


def test_empty_prefix_removes_everything() -> None:
    cache: LruCache[tuple[str, str], int] = LruCache(10, _name(), tree=True)
    cache.set(("a", "b"), 1)
    cache.set(("c", "d"), 2)
    assert cache.del_prefix(()) == 2
    assert len(cache) == 0


def test_tree_cache_rejects_non_tuple_keys_and_plain_cache_rejects_del_prefix() -> None:
    tree: LruCache[object, int] = LruCache(10, _name(), tree=True)
    with pytest.raises(TypeError):
        tree.set("abc", 1)
    plain: LruCache[tuple[str], int] = LruCache(10, _name())
    with pytest.raises(TypeError):
        plain.del_prefix(("a",))


def test_metrics_count_hits_misses_evictions_invalidations() -> None:
    cache: LruCache[tuple[str, str], int] = LruCache(2, _name(), tree=True)
    m = cache.metrics
    cache.set(("a", "1"), 1)
    cache.get(("a", "1"))
    cache.get(("zz", "1"))
    cache.get(("zz", "1"), update_metrics=False)
    cache.set(("a", "2"), 2)
    cache.set(("b", "1"), 3)  # evicts ("a", "1")
    cache.pop(("b", "1"))
    cache.pop(("b", "1"))  # already gone: not an invalidation
    cache.del_prefix(("a",))
    assert (m.hits, m.misses, m.evictions, m.invalidations) == (1, 1, 1, 2)
    assert m.size() == 0


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, 3), st.integers(0, 3)),
        st.tuples(st.just("get"), st.integers(0, 3), st.integers(0, 3)),
        st.tuples(st.just("pop"), st.integers(0, 3), st.integers(0, 3)),
        st.tuples(st.just("del_prefix"), st.integers(0, 3), st.just(-1)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(_ops, st.integers(1, 5))
def test_tree_lru_matches_a_naive_model(ops: list[tuple[str, int, int]], max_size: int) -> None:
    """Against a list-based model: same contents, same recency order, same answers."""
    cache: LruCache[tuple[int, ...], int] = LruCache(max_size, _name(), tree=True)
    model: list[tuple[tuple[int, ...], int]] = []  # oldest first
    for op, a, b in ops:
        key = (a, b)
        found = [kv for kv in model if kv[0] == key]
        if op == "set":
            if found:
                model.remove(found[0])
            model.append((key, a * 10 + b))
            model = model[-max_size:]
            cache.set(key, a * 10 + b)
        elif op == "get":
            assert cache.get(key) == (found[0][1] if found else None)
            if found:
                model.remove(found[0])
                model.append(found[0])
        elif op == "pop":
            assert cache.pop(key) == (found[0][1] if found else None)
            if found:
                model.remove(found[0])
        else:
            removed = [kv for kv in model if kv[0][0] == a]
            assert cache.del_prefix((a,)) == len(removed)
            model = [kv for kv in model if kv[0][0] != a]
        assert cache.keys() == [k for k, _ in model]
