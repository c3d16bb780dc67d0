"""``KeyTree``: a set of tuple keys that can drop every key under a prefix.

Replication often invalidates "everything about this room" in a cache keyed
by ``(room_id, user_id)``. Scanning the whole cache for matching keys would
cost O(cache size) per invalidation; the tree instead nests one dict per key
element, so dropping a prefix costs the depth of the prefix plus the number
of keys dropped.

A node is a dict from the next key element to the child node. The private
``_END`` marker inside a node says "the path down to here is itself a key",
which lets keys of different lengths share a path.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

_END: Any = object()

_Node = dict[Hashable, Any]


class KeyTree:
    """A set of tuples supporting removal of every tuple starting with a prefix."""

    __slots__ = ("_root", "_size")

    def __init__(self) -> None:
        self._root: _Node = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, key: tuple[Hashable, ...]) -> None:
        node = self._root
        for part in key:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            node = child
        if _END not in node:
            node[_END] = True
            self._size += 1

    def __contains__(self, key: tuple[Hashable, ...]) -> bool:
        node: _Node | None = self._root
        for part in key:
            assert node is not None
            node = node.get(part)
            if node is None:
                return False
        return node is not None and _END in node

    def discard(self, key: tuple[Hashable, ...]) -> None:
        """Remove ``key`` if present, pruning the branches it leaves empty."""
        path: list[tuple[_Node, Hashable]] = []
        node = self._root
        for part in key:
            child = node.get(part)
            if child is None:
                return
            path.append((node, part))
            node = child
        if _END not in node:
            return
        del node[_END]
        self._size -= 1
        self._prune(node, path)

    def pop_prefix(self, prefix: tuple[Hashable, ...]) -> list[tuple[Hashable, ...]]:
        """Remove and return every key that starts with ``prefix`` (``prefix`` included)."""
        if not prefix:
            return self.clear()
        path: list[tuple[_Node, Hashable]] = []
        node = self._root
        for part in prefix:
            child = node.get(part)
            if child is None:
                return []
            path.append((node, part))
            node = child
        parent, part = path.pop()
        del parent[part]
        removed = list(_walk(node, prefix))
        self._size -= len(removed)
        self._prune(parent, path)
        return removed

    def clear(self) -> list[tuple[Hashable, ...]]:
        """Remove and return every key."""
        removed = list(_walk(self._root, ()))
        self._root = {}
        self._size = 0
        return removed

    @staticmethod
    def _prune(node: _Node, path: list[tuple[_Node, Hashable]]) -> None:
        # Walk back up removing nodes that hold neither keys nor children.
        while not node and path:
            parent, part = path.pop()
            del parent[part]
            node = parent


def _walk(node: _Node, prefix: tuple[Hashable, ...]) -> list[tuple[Hashable, ...]]:
    """Every key in the subtree ``node`` found at ``prefix`` (iterative, no recursion limit)."""
    found: list[tuple[Hashable, ...]] = []
    stack = [(node, prefix)]
    while stack:
        current, path = stack.pop()
        for part, child in current.items():
            if part is _END:
                found.append(path)
            else:
                stack.append((child, (*path, part)))
    return found
