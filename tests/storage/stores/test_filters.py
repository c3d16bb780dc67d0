"""FilterStore: per-user filter IDs, identical filters shared, cached reads."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer

from atrium.storage.stores.filters import FilterStore
from tests.storage.harness import StatementCounter


@pytest_twisted.ensureDeferred
async def test_ids_count_per_user_and_identical_filters_share_one(db):
    store = FilterStore(db)
    a = {"room": {"timeline": {"limit": 5}}}
    first = await store.add_user_filter("@a:hs", a)
    assert first == 0
    # Same content, other key order: the same filter.
    assert await store.add_user_filter("@a:hs", {"room": {"timeline": {"limit": 5}}}) == first
    assert await store.add_user_filter("@a:hs", {"presence": {}}) == 1
    assert await store.add_user_filter("@b:hs", a) == 0
    assert await store.get_user_filter("@a:hs", 0) == a
    assert await store.get_user_filter("@a:hs", 1) == {"presence": {}}
    assert await store.get_user_filter("@a:hs", 2) is None
    assert await store.get_user_filter("@c:hs", 0) is None
    with StatementCounter(db) as counter:
        await store.get_user_filter("@a:hs", 0)
    assert counter.statements == []


@pytest_twisted.ensureDeferred
async def test_concurrent_uploads_get_distinct_ids(db):
    store = FilterStore(db)
    ids = await defer.gatherResults(
        [defer.ensureDeferred(store.add_user_filter("@a:hs", {"n": i})) for i in range(8)]
    )
    assert sorted(ids) == list(range(8))
    for i, filter_id in enumerate(ids):
        assert await store.get_user_filter("@a:hs", filter_id) == {"n": i}
