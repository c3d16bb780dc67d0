"""KeyTree: prefix removal of tuple keys, including keys of different lengths."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from atrium.util.caches.keytree import KeyTree


def test_pop_prefix_returns_keys_of_any_length_under_the_prefix() -> None:
    tree = KeyTree()
    for key in [("a",), ("a", "b"), ("a", "b", "c"), ("a", "c"), ("b", "a")]:
        tree.add(key)
    assert sorted(tree.pop_prefix(("a", "b"))) == [("a", "b"), ("a", "b", "c")]
    assert ("a",) in tree and ("a", "c") in tree
    assert ("a", "b") not in tree
    assert len(tree) == 3


def test_discard_prunes_empty_branches_so_the_tree_does_not_leak() -> None:
    tree = KeyTree()
    tree.add(("room", "user", "device"))
    tree.discard(("room", "user", "device"))
    assert len(tree) == 0
    assert tree._root == {}  # no empty nested dicts left behind


def test_adding_the_same_key_twice_counts_once() -> None:
    tree = KeyTree()
    tree.add(("x", "y"))
    tree.add(("x", "y"))
    assert len(tree) == 1
    assert tree.pop_prefix(("x",)) == [("x", "y")]


_keys = st.lists(st.integers(0, 2), min_size=0, max_size=3).map(tuple)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "discard", "pop_prefix"]), _keys), max_size=50))
def test_keytree_matches_a_set_model(ops: list[tuple[str, tuple[int, ...]]]) -> None:
    tree = KeyTree()
    model: set[tuple[int, ...]] = set()
    for op, key in ops:
        if op == "add":
            tree.add(key)
            model.add(key)
        elif op == "discard":
            tree.discard(key)
            model.discard(key)
        else:
            expected = {k for k in model if k[: len(key)] == key}
            assert set(tree.pop_prefix(key)) == expected
            model -= expected
        assert len(tree) == len(model)
        assert all(k in tree for k in model)
    assert set(tree.clear()) == model
