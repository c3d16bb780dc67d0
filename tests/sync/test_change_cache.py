"""StreamChangeCache: answers from memory only when it knows the whole range."""

from __future__ import annotations

from atrium.sync.change_cache import StreamChangeCache, SyncChangeTracker


def test_changes_after_a_position():
    cache = StreamChangeCache("t", current_position=10)
    cache.entity_has_changed("!a", 12)
    cache.entity_has_changed("!b", 15)
    assert cache.get_entities_changed(["!a", "!b", "!c"], since=10, upto=15) == {"!a", "!b"}
    assert cache.get_entities_changed(["!a", "!b", "!c"], since=12, upto=15) == {"!b"}
    assert cache.get_entities_changed(["!a", "!b"], since=15, upto=15) == set()
    assert cache.has_entity_changed("!b", 14, 15)
    assert not cache.has_entity_changed("!c", 10, 15)


def test_unknown_before_start_or_beyond_what_was_seen():
    cache = StreamChangeCache("t", current_position=10)
    cache.entity_has_changed("!a", 12)
    # `since` older than the cache: it cannot say what happened then.
    assert cache.get_entities_changed(["!b"], since=9, upto=12) is None
    assert cache.has_entity_changed("!b", 9, 12)
    # A range past the last recorded position: not known yet either.
    assert cache.get_entities_changed(["!b"], since=10, upto=13) is None
    cache.advance(13)
    assert cache.get_entities_changed(["!b"], since=10, upto=13) == set()


def test_eviction_makes_the_cache_cautious_not_wrong():
    cache = StreamChangeCache("t", current_position=0, max_size=2)
    cache.entity_has_changed("!a", 1)
    cache.entity_has_changed("!b", 2)
    cache.entity_has_changed("!c", 3)
    assert cache.earliest_known == 1
    # "!a" was forgotten: asking from before its change is "don't know".
    assert cache.get_entities_changed(["!a"], since=0, upto=3) is None
    assert cache.get_entities_changed(["!a", "!c"], since=1, upto=3) == {"!c"}


def test_tracker_follows_only_the_events_stream():
    tracker = SyncChangeTracker(current_position=5)
    tracker.on_new_data("typing", 9, users=["@u:hs"], rooms=["!r:hs"])
    assert tracker.rooms.max_seen == 5
    tracker.on_new_data("events", 7, users=["@u:hs"], rooms=["!r:hs"])
    assert tracker.rooms.get_entities_changed(["!r:hs", "!s:hs"], 5, 7) == {"!r:hs"}
    assert tracker.memberships.has_entity_changed("@u:hs", 6, 7)
    assert not tracker.memberships.has_entity_changed("@v:hs", 5, 7)
