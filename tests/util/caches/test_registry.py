"""CacheRegistry: replication invalidates caches by name, per server."""

from __future__ import annotations

import logging

import pytest

from atrium.util.caches.descriptors import cached
from atrium.util.caches.registry import CacheRegistry, register_store_caches
from tests.util.deferred_helpers import success_result_of


class _UserStore:
    def __init__(self) -> None:
        self.reads = 0

    @cached()
    async def get_user(self, user_id: str) -> str:
        self.reads += 1
        return user_id.upper()

    @cached(tree=True, num_args=2, name="room_member")
    async def get_member(self, room_id: str, user_id: str) -> str:
        self.reads += 1
        return f"{room_id}/{user_id}"

    async def not_cached(self, x: str) -> str:
        return x


class _SubStore(_UserStore):
    # Overrides the cached method with a plain one: must not be registered.
    async def get_user(self, user_id: str) -> str:  # type: ignore[override]
        return user_id


def _server() -> tuple[CacheRegistry, _UserStore]:
    registry = CacheRegistry()
    store = _UserStore()
    registry.register_store(store)
    return registry, store


def test_register_store_caches_uses_method_or_explicit_names() -> None:
    registry = CacheRegistry()
    assert sorted(register_store_caches(registry, _UserStore())) == ["get_user", "room_member"]
    assert registry.names() == ["get_user", "room_member"]
    assert register_store_caches(CacheRegistry(), _SubStore()) == ["room_member"]


def test_invalidate_with_keys_drops_only_that_key() -> None:
    registry, store = _server()
    success_result_of(store.get_user("@a"))
    success_result_of(store.get_user("@b"))
    registry.invalidate("get_user", ("@a",))
    assert store.get_user.cache.lru.keys() == [("@b",)]


def test_invalidate_with_none_drops_everything() -> None:
    registry, store = _server()
    success_result_of(store.get_user("@a"))
    success_result_of(store.get_user("@b"))
    registry.invalidate("get_user", None)
    assert len(store.get_user.cache) == 0


def test_invalidate_accepts_json_lists_and_batches() -> None:
    registry, store = _server()
    for user in ("@a", "@b", "@c"):
        success_result_of(store.get_user(user))
    registry.invalidate("get_user", ["@a"])  # type: ignore[arg-type]
    registry.invalidate_keys("get_user", [("@b",), ("@c",)])
    assert len(store.get_user.cache) == 0


def test_tree_cache_invalidation_by_prefix_and_by_full_key() -> None:
    registry, store = _server()
    for room, user in [("!r", "@a"), ("!r", "@b"), ("!s", "@a")]:
        success_result_of(store.get_member(room, user))
    registry.invalidate("room_member", ("!s", "@a"))
    assert sorted(store.get_member.cache.lru.keys()) == [("!r", "@a"), ("!r", "@b")]
    registry.invalidate("room_member", ("!r",))
    assert len(store.get_member.cache) == 0


def test_servers_in_one_process_do_not_share_invalidations() -> None:
    registry_one, store_one = _server()
    _registry_two, store_two = _server()
    success_result_of(store_one.get_user("@a"))
    success_result_of(store_two.get_user("@a"))
    registry_one.invalidate("get_user", None)
    assert len(store_one.get_user.cache) == 0
    assert len(store_two.get_user.cache) == 1


def test_unknown_name_or_bad_key_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    registry, store = _server()
    success_result_of(store.get_user("@a"))
    with caplog.at_level(logging.WARNING):
        registry.invalidate("no_such_cache", ("@a",))
        registry.invalidate("get_user", "@a")  # type: ignore[arg-type]
        registry.invalidate("get_user", ("@a", "extra"))  # wrong key length
    assert "no_such_cache" in caplog.text
    assert len(store.get_user.cache) == 1


def test_every_cache_registered_under_a_name_is_invalidated() -> None:
    registry = CacheRegistry()
    dropped: list[object] = []
    registry.register("shared", dropped.append, lambda: dropped.append("all"))
    registry.register("shared", lambda k: dropped.append(("second", k)), lambda: None)
    registry.invalidate("shared", ("k",))
    registry.invalidate("shared", None)
    assert dropped == [("k",), ("second", ("k",)), "all"]
