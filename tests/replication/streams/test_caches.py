"""The caches stream on a real database: one row per invalidation call, per-instance
id spaces, paging, pruning, and what applying a row invalidates."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from atrium.replication.streams.caches import (
    CachesStream,
    CachesStreamRow,
    ReplicatingCacheInvalidator,
    get_cache_invalidations,
)
from atrium.storage.stores import LocalCacheInvalidator
from atrium.util.caches import CacheRegistry
from atrium.util.clock import Clock


class _Recorder:
    def __init__(self) -> None:
        self.registry = CacheRegistry()
        self.calls: list[tuple[str, object]] = []
        for name in ("get_a", "get_b"):
            self.registry.register(
                name,
                lambda key, n=name: self.calls.append((n, key)),
                lambda n=name: self.calls.append((n, "ALL")),
            )


async def _invalidator(db, instance: str, recorder: _Recorder) -> ReplicatingCacheInvalidator:
    return await ReplicatingCacheInvalidator.create(
        LocalCacheInvalidator(recorder.registry), db, instance, Clock(reactor)
    )


@pytest_twisted.ensureDeferred
async def test_each_call_is_one_row_naming_all_its_keys_and_invalidates_locally_at_once(db):
    recorder = _Recorder()
    inv = await _invalidator(db, "w1", recorder)
    inv.invalidate("get_a", [("!r1:hs",), ("!r2:hs",)])
    inv.invalidate("get_b", None)
    inv.invalidate("get_a", [])  # nothing to do: no row
    # Local invalidation does not wait for the database.
    assert recorder.calls == [("get_a", ("!r1:hs",)), ("get_a", ("!r2:hs",)), ("get_b", "ALL")]
    written = await inv.flush()
    assert [(t, r.cache_name, r.keys) for t, r in written] == [
        (1, "get_a", [["!r1:hs"], ["!r2:hs"]]),
        (2, "get_b", None),
    ]
    assert inv.current_token() == 2 and not inv.has_pending()
    updates = await get_cache_invalidations(db, "w1", 0, 2, 10)
    assert [(t, r) for t, r in updates.rows] == written
    assert await inv.flush() == []


@pytest_twisted.ensureDeferred
async def test_ids_are_per_instance_and_resume_after_a_restart(db):
    recorder = _Recorder()
    a = await _invalidator(db, "a", recorder)
    b = await _invalidator(db, "b", recorder)
    for inv in (a, b, a):
        inv.invalidate("get_a", [(1,)])
        await inv.flush()
    assert (a.current_token(), b.current_token()) == (2, 1)
    restarted = await _invalidator(db, "a", recorder)
    assert restarted.current_token() == 2
    restarted.invalidate("get_a", [(2,)])
    assert [t for t, _ in await restarted.flush()] == [3]
    assert [t for t, _ in (await get_cache_invalidations(db, "b", 0, 10, 10)).rows] == [1]


@pytest_twisted.ensureDeferred
async def test_updates_are_paged_with_upto_and_limited(db):
    inv = await _invalidator(db, "w1", _Recorder())
    for i in range(5):
        inv.invalidate("get_a", [(i,)])
    await inv.flush()
    page = await get_cache_invalidations(db, "w1", 0, 5, 2)
    assert [t for t, _ in page.rows] == [1, 2] and page.limited and page.upto_token == 2
    rest = await get_cache_invalidations(db, "w1", 2, 5, 10)
    assert [t for t, _ in rest.rows] == [3, 4, 5] and not rest.limited and rest.upto_token == 5
    # Rows past ``to`` are not returned, and ``upto`` is ``to`` when not limited.
    part = await get_cache_invalidations(db, "w1", 0, 3, 10)
    assert [t for t, _ in part.rows] == [1, 2, 3] and part.upto_token == 3


@pytest_twisted.ensureDeferred
async def test_key_that_json_cannot_carry_is_replicated_as_invalidate_all(db):
    recorder = _Recorder()
    inv = await _invalidator(db, "w1", recorder)
    inv.invalidate("get_a", [(frozenset({1}),)])
    assert recorder.calls == [("get_a", (frozenset({1}),))]
    [(_, row)] = await inv.flush()
    assert row.keys is None


@pytest_twisted.ensureDeferred
async def test_prune_drops_old_rows_but_keeps_the_latest(db):
    inv = await _invalidator(db, "w1", _Recorder())
    for i in range(3):
        inv.invalidate("get_a", [(i,)])
    await inv.flush()
    deleted = await inv.prune(before_ts=inv.clock.time_msec() + 1000)
    assert deleted == 2
    rows = (await get_cache_invalidations(db, "w1", 0, 3, 10)).rows
    assert [t for t, _ in rows] == [3]
    assert (await _invalidator(db, "w1", _Recorder())).current_token() == 3


@pytest_twisted.ensureDeferred
async def test_stored_positions_are_each_instances_latest_row(db):
    class Hs:
        pass

    hs = Hs()
    hs.db = db  # type: ignore[attr-defined]
    stream = CachesStream(hs)
    assert await stream.stored_positions() == {}
    recorder = _Recorder()
    for name, n in (("a", 2), ("b", 1)):
        inv = await _invalidator(db, name, recorder)
        for i in range(n):
            inv.invalidate("get_a", [(i,)])
        await inv.flush()
    assert await stream.stored_positions() == {"a": 2, "b": 1}


@pytest_twisted.ensureDeferred
async def test_applying_rows_invalidates_the_named_caches_with_tuple_keys():
    effects = await CachesStream(None).effects(
        [
            CachesStreamRow("get_a", [["@u:hs", ["nested", 1]]], 5),
            CachesStreamRow("get_b", None, 5),
        ]
    )
    assert effects.invalidations == [("get_a", [("@u:hs", ("nested", 1))]), ("get_b", None)]
    assert not effects.users and not effects.rooms


@pytest.mark.parametrize(
    "data",
    [
        ["get_a", [["k"]]],
        ["get_a", "k", 5],
        ["get_a", ["k"], 5],
        [5, None, 5],
        ["get_a", None, "soon"],
        {"cache_name": "get_a"},
    ],
)
def test_malformed_rows_are_rejected(data):
    with pytest.raises(ValueError):
        CachesStream(None).parse_row(data)


def test_row_round_trips_through_json_form():
    row = CachesStreamRow("get_a", [["x", 1]], 7)
    assert CachesStream(None).parse_row(row.to_json()) == row
