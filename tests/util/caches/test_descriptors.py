"""@cached / @cached_list: per-instance caches, de-duplication, invalidation safety.

The cached functions wait on Deferreds the test fires by hand, so "in flight"
is an exact state, and no reactor is needed.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from twisted.internet import defer

from atrium.util.caches.descriptors import cached, cached_list
from tests.util.deferred_helpers import assert_no_result, failure_result_of, success_result_of


class _Store:
    """A store whose reads block on ``self.gates[key]`` when one is set."""

    def __init__(self, label: str = "s") -> None:
        self.label = label
        self.calls: Counter[Any] = Counter()
        self.batch_calls: list[tuple[Any, ...]] = []
        self.gates: dict[Any, defer.Deferred[None]] = {}
        self.fail_next: set[Any] = set()
        self.data: dict[str, str] = {}

    async def _read(self, key: Any) -> None:
        self.calls[key] += 1
        gate = self.gates.get(key)
        if gate is not None:
            await gate
        if key in self.fail_next:
            self.fail_next.discard(key)
            raise RuntimeError(f"read of {key} failed")

    @cached()
    async def get_name(self, user_id: str) -> str | None:
        await self._read(user_id)
        return self.data.get(user_id, f"{self.label}:{user_id}")

    @cached_list("get_name", "user_ids")
    async def get_names(self, user_ids: list[str]) -> dict[str, str]:
        self.batch_calls.append(tuple(user_ids))
        for user_id in user_ids:
            await self._read(("batch", user_id))
        # "@ghost" is unknown: the batch leaves it out.
        return {u: self.data.get(u, f"{self.label}:{u}") for u in user_ids if u != "@ghost"}

    @cached(num_args=2, tree=True, max_entries=100)
    async def get_member(self, room_id: str, user_id: str, extra: str = "ignored") -> str:
        await self._read((room_id, user_id))
        return f"{room_id}/{user_id}"

    @cached_list("get_member", "user_ids")
    async def get_members(self, room_id: str, user_ids: list[str]) -> dict[str, str]:
        self.batch_calls.append((room_id, *user_ids))
        return {u: f"{room_id}/{u}" for u in user_ids}

    @cached(max_entries=2)
    async def get_pair(self, a: str, b: str = "default") -> str:
        await self._read((a, b))
        return f"{a}+{b}"


def test_hit_returns_an_already_fired_deferred_without_calling_again() -> None:
    store = _Store()
    first = store.get_name("@a")
    assert success_result_of(first) == "s:@a"
    second = store.get_name("@a")
    assert isinstance(second, defer.Deferred)
    assert success_result_of(second) == "s:@a"
    assert store.calls["@a"] == 1


def test_each_store_instance_has_its_own_cache() -> None:
    one, two = _Store("one"), _Store("two")
    assert success_result_of(one.get_name("@a")) == "one:@a"
    assert success_result_of(two.get_name("@a")) == "two:@a"
    assert one.get_name.cache is not two.get_name.cache
    one.get_name.invalidate(("@a",))
    assert success_result_of(two.get_name("@a")) == "two:@a"
    assert two.calls["@a"] == 1
    success_result_of(one.get_name("@a"))
    assert one.calls["@a"] == 2


def test_keyword_and_default_arguments_map_to_the_same_key() -> None:
    store = _Store()
    assert success_result_of(store.get_pair("x")) == "x+default"
    assert success_result_of(store.get_pair("x", "default")) == "x+default"
    assert success_result_of(store.get_pair(a="x", b="default")) == "x+default"
    assert success_result_of(store.get_pair("x", b="default")) == "x+default"
    assert store.calls[("x", "default")] == 1
    assert ("x", "default") in store.get_pair.cache.lru


def test_bad_calls_raise_type_error_even_on_a_hit() -> None:
    store = _Store()
    success_result_of(store.get_pair("x"))
    with pytest.raises(TypeError):
        store.get_pair("x", a="x")
    with pytest.raises(TypeError):
        store.get_pair("x", colour="red")
    with pytest.raises(TypeError):
        store.get_pair()


def test_arguments_beyond_num_args_are_not_part_of_the_key() -> None:
    store = _Store()
    success_result_of(store.get_member("!r", "@a", "one"))
    success_result_of(store.get_member("!r", "@a", extra="two"))
    assert store.calls[("!r", "@a")] == 1


def test_concurrent_lookups_share_one_call_and_get_separate_deferreds() -> None:
    store = _Store()
    store.gates["@a"] = gate = defer.Deferred()
    first, second, third = (store.get_name("@a") for _ in range(3))
    assert store.calls["@a"] == 1
    assert first is not second
    # One caller giving up does not cancel the read for the others.
    second.cancel()
    failure_result_of(second, defer.CancelledError)
    # Nor does one caller's callback chain leak into another's.
    first.addCallback(lambda v: v.upper())
    assert_no_result(third)
    gate.callback(None)
    assert success_result_of(first) == "S:@A"
    assert success_result_of(third) == "s:@a"
    assert store.calls["@a"] == 1
    success_result_of(store.get_name("@a"))
    assert store.calls["@a"] == 1


def test_invalidation_during_lookup_hands_result_to_waiters_but_does_not_store_it() -> None:
    store = _Store()
    store.data["@a"] = "old"
    store.gates["@a"] = gate = defer.Deferred()
    in_flight = store.get_name("@a")
    # The write lands and replication invalidates while the read is running.
    store.data["@a"] = "new"
    store.get_name.invalidate(("@a",))
    # A caller arriving after the invalidation must not join the old read.
    del store.gates["@a"]
    after = store.get_name("@a")
    assert store.calls["@a"] == 2
    assert success_result_of(after) == "new"
    gate.callback(None)
    # The stale read (which, in real life, saw "old") does not overwrite "new".
    success_result_of(in_flight)
    assert store.get_name.cache.get_if_cached(("@a",)) == "new"
    assert success_result_of(store.get_name("@a")) == "new"
    assert store.calls["@a"] == 2


def test_stale_result_is_dropped_even_when_nobody_looked_up_again() -> None:
    store = _Store()
    store.gates["@a"] = gate = defer.Deferred()
    in_flight = store.get_name("@a")
    store.get_name.invalidate(("@a",))
    gate.callback(None)
    assert success_result_of(in_flight) == "s:@a"
    assert len(store.get_name.cache) == 0
    success_result_of(store.get_name("@a"))
    assert store.calls["@a"] == 2


@pytest.mark.parametrize("how", ["invalidate_all", "invalidate_many"])
def test_bulk_invalidation_during_lookup_also_prevents_storing(how: str) -> None:
    store = _Store()
    store.gates[("!r", "@a")] = gate = defer.Deferred()
    in_flight = store.get_member("!r", "@a")
    if how == "invalidate_all":
        store.get_member.invalidate_all()
    else:
        store.get_member.invalidate_many(("!r",))
    gate.callback(None)
    success_result_of(in_flight)
    assert len(store.get_member.cache) == 0
    assert not store.get_member.cache.in_flight(("!r", "@a"))


def test_invalidate_many_spares_in_flight_lookups_of_other_prefixes() -> None:
    store = _Store()
    store.gates[("!other", "@a")] = gate = defer.Deferred()
    in_flight = store.get_member("!other", "@a")
    success_result_of(store.get_member("!r", "@a"))
    success_result_of(store.get_member("!r", "@b"))
    store.get_member.invalidate_many(("!r",))
    gate.callback(None)
    success_result_of(in_flight)
    assert store.get_member.cache.lru.keys() == [("!other", "@a")]


def test_failures_reach_every_waiter_and_are_not_cached() -> None:
    store = _Store()
    store.fail_next.add("@a")
    store.gates["@a"] = gate = defer.Deferred()
    first, second = store.get_name("@a"), store.get_name("@a")
    gate.callback(None)
    failure_result_of(first, RuntimeError)
    failure_result_of(second, RuntimeError)
    del store.gates["@a"]
    assert success_result_of(store.get_name("@a")) == "s:@a"
    assert store.calls["@a"] == 2


def test_synchronous_failure_is_not_cached() -> None:
    store = _Store()
    store.fail_next.add("@a")
    failure_result_of(store.get_name("@a"), RuntimeError)
    assert success_result_of(store.get_name("@a")) == "s:@a"


def test_prefill_is_returned_and_supersedes_a_lookup_in_flight() -> None:
    store = _Store()
    store.gates["@a"] = gate = defer.Deferred()
    in_flight = store.get_name("@a")
    store.get_name.prefill(("@a",), "written")
    gate.callback(None)
    success_result_of(in_flight)
    assert success_result_of(store.get_name("@a")) == "written"
    assert store.calls["@a"] == 1


def test_cache_respects_max_entries() -> None:
    store = _Store()
    for a in ("x", "y", "z"):
        success_result_of(store.get_pair(a))
    assert len(store.get_pair.cache) == 2
    success_result_of(store.get_pair("x"))
    assert store.calls[("x", "default")] == 2


def test_invalidate_requires_a_full_tuple_key() -> None:
    store = _Store()
    with pytest.raises(TypeError):
        store.get_name.invalidate("@a")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.get_member.invalidate(("!r",))
    with pytest.raises(TypeError):
        store.get_name.invalidate_many(("@a",))  # not a tree cache


def test_cached_list_fetches_only_misses_and_fills_the_item_cache() -> None:
    store = _Store()
    success_result_of(store.get_name("@a"))
    result = success_result_of(store.get_names(["@a", "@b", "@c", "@b"]))
    assert result == {"@a": "s:@a", "@b": "s:@b", "@c": "s:@c"}
    assert store.batch_calls == [("@b", "@c")]
    # The batch filled the per-item cache: no item read, no new batch.
    assert success_result_of(store.get_name("@c")) == "s:@c"
    assert store.calls["@c"] == 0
    assert success_result_of(store.get_names(user_ids=["@a", "@c"])) == {
        "@a": "s:@a",
        "@c": "s:@c",
    }
    assert store.batch_calls == [("@b", "@c")]


def test_cached_list_caches_ids_the_batch_did_not_return_as_none() -> None:
    store = _Store()
    assert success_result_of(store.get_names(["@ghost"])) == {"@ghost": None}
    assert success_result_of(store.get_name("@ghost")) is None
    assert store.calls["@ghost"] == 0


def test_cached_list_joins_item_lookups_already_in_flight() -> None:
    store = _Store()
    store.gates["@a"] = gate = defer.Deferred()
    single = store.get_name("@a")
    batch = store.get_names(["@a", "@b"])
    assert store.batch_calls == [("@b",)]
    assert_no_result(batch)
    gate.callback(None)
    assert success_result_of(batch) == {"@a": "s:@a", "@b": "s:@b"}
    assert success_result_of(single) == "s:@a"
    assert store.calls["@a"] == 1


def test_item_lookups_join_a_batch_in_flight_and_survive_the_batch_caller_cancelling() -> None:
    store = _Store()
    store.gates[("batch", "@a")] = gate = defer.Deferred()
    batch = store.get_names(["@a"])
    single = store.get_name("@a")
    assert store.calls["@a"] == 0
    batch.cancel()
    failure_result_of(batch, defer.CancelledError)
    gate.callback(None)
    assert success_result_of(single) == "s:@a"
    assert store.get_name.cache.get_if_cached(("@a",)) == "s:@a"


def test_cached_list_invalidated_in_flight_does_not_store() -> None:
    store = _Store()
    store.gates[("batch", "@a")] = gate = defer.Deferred()
    batch = store.get_names(["@a"])
    store.get_name.invalidate(("@a",))
    gate.callback(None)
    assert success_result_of(batch) == {"@a": "s:@a"}
    assert len(store.get_name.cache) == 0


def test_cached_list_failure_fails_joined_item_lookups_and_caches_nothing() -> None:
    store = _Store()
    store.fail_next.add(("batch", "@a"))
    store.gates[("batch", "@a")] = gate = defer.Deferred()
    batch = store.get_names(["@a"])
    single = store.get_name("@a")
    gate.callback(None)
    failure_result_of(batch, RuntimeError)
    failure_result_of(single, RuntimeError)
    assert len(store.get_name.cache) == 0


def test_cached_list_with_a_fixed_leading_key_argument() -> None:
    store = _Store()
    success_result_of(store.get_member("!r", "@a"))
    result = success_result_of(store.get_members("!r", ["@a", "@b"]))
    assert result == {"@a": "!r/@a", "@b": "!r/@b"}
    assert store.batch_calls == [("!r", "@b")]
    assert store.get_member.cache.get_if_cached(("!r", "@b")) == "!r/@b"


def test_cached_list_whose_arguments_do_not_match_the_item_key_is_rejected() -> None:
    # Python 3.11 wraps errors from __set_name__ in a RuntimeError; 3.12+ does not.
    with pytest.raises((TypeError, RuntimeError)) as raised:

        class _Bad:
            @cached()
            async def get_thing(self, room_id: str, user_id: str) -> str:
                return ""

            @cached_list("get_thing", "user_ids")
            async def get_things(self, user_ids: list[str], room_id: str) -> dict[str, str]:
                return {}

    error = raised.value.__cause__ or raised.value
    assert isinstance(error, TypeError)
    assert "must be the key arguments" in str(error)


def test_cached_rejects_star_args_without_num_args() -> None:
    with pytest.raises(TypeError):

        class _Bad:
            @cached()
            async def get_thing(self, *ids: str) -> str:
                return ""
