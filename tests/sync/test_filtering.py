"""Filters (spec "Filtering"): schema validation and which events each part keeps."""

from __future__ import annotations

import pytest

from atrium.sync.filtering import (
    DEFAULT_TIMELINE_LIMIT,
    MAX_LIMIT,
    EventFilter,
    Filter,
    FilterError,
    only_fields,
    validate_filter_json,
)


def ev(type: str = "m.room.message", sender: str = "@a:hs", room_id: str = "!r:hs", **content):
    return {"type": type, "sender": sender, "room_id": room_id, "content": content}


def test_types_with_wildcards_and_exclusions():
    f = EventFilter({"types": ["m.room.*", "org.example.exact"], "not_types": ["m.room.member"]})
    assert f.check(ev("m.room.message"))
    assert f.check(ev("org.example.exact"))
    assert not f.check(ev("org.example.exactly"))  # no implicit prefix match
    assert not f.check(ev("m.room.member"))  # not_types wins over types
    assert not f.check(ev("m.call.invite"))
    star = EventFilter({"not_types": ["*"]})
    assert not star.check(ev("anything"))
    middle = EventFilter({"types": ["m.*.invite"]})
    assert middle.check(ev("m.call.invite")) and not middle.check(ev("m.call.answer"))
    literal = EventFilter({"types": ["m.room.mess?ge"]})
    assert not literal.check(ev("m.room.message"))  # only * is special


def test_senders_rooms_and_contains_url():
    f = EventFilter({"senders": ["@a:hs", "@b:hs"], "not_senders": ["@b:hs"]})
    assert f.check(ev(sender="@a:hs"))
    assert not f.check(ev(sender="@b:hs"))
    assert not f.check(ev(sender="@c:hs"))
    rooms = EventFilter({"rooms": ["!r:hs", "!s:hs"], "not_rooms": ["!s:hs"]})
    assert rooms.check(ev(room_id="!r:hs"))
    assert not rooms.check(ev(room_id="!s:hs"))
    assert not rooms.check(ev(room_id="!t:hs"))
    with_url = EventFilter({"contains_url": True})
    assert with_url.check(ev(url="mxc://hs/x")) and not with_url.check(ev(body="x"))
    without = EventFilter({"contains_url": False})
    assert without.check(ev(body="x")) and not without.check(ev(url="mxc://hs/x"))
    assert EventFilter().is_trivial and not f.is_trivial


def test_limits_default_and_are_capped():
    assert Filter().timeline_limit == DEFAULT_TIMELINE_LIMIT
    assert Filter({"room": {"timeline": {"limit": 5}}}).timeline_limit == 5
    assert Filter({"room": {"timeline": {"limit": 10**9}}}).timeline_limit == MAX_LIMIT
    assert Filter({"room": {"timeline": {"limit": 0}}}).timeline_limit == 0


def test_room_level_filter_and_flags():
    f = Filter(
        {
            "room": {
                "rooms": ["!a:hs", "!b:hs"],
                "not_rooms": ["!b:hs"],
                "include_leave": True,
                "state": {"lazy_load_members": True},
            },
            "presence": {"not_senders": ["@spam:hs"]},
            "account_data": {"types": ["m.direct"]},
        }
    )
    assert f.allows_room("!a:hs") and not f.allows_room("!b:hs") and not f.allows_room("!c:hs")
    assert f.include_leave and f.lazy_load_members
    assert not Filter().lazy_load_members and not Filter().include_leave
    presence = [ev("m.presence", "@spam:hs"), ev("m.presence", "@ok:hs")]
    assert f.filter_presence(presence) == [presence[1]]
    data = [{"type": "m.direct", "content": {}}, {"type": "m.push_rules", "content": {}}]
    assert f.filter_account_data(data) == [data[0]]


def test_event_objects_are_filtered_like_dicts():
    from atrium.events.room_versions import V10
    from tests.support.events import make_pdu

    event = make_pdu(V10, type="m.room.message", sender="@a:example.org", content={"url": "x"})
    assert EventFilter({"types": ["m.room.message"], "contains_url": True}).check(event)
    assert not EventFilter({"senders": ["@b:example.org"]}).check(event)


@pytest.mark.parametrize(
    "bad",
    [
        [],
        "filter",
        {"room": {"timeline": {"limit": 1.5}}},
        {"room": {"timeline": {"limit": -3}}},
        {"room": {"state": {"types": [1]}}},
        {"room": {"not_rooms": ["#alias:hs"]}},
        {"room": {"ephemeral": {"senders": ["bob"]}}},
        {"room": {"timeline": {"lazy_load_members": "yes"}}},
        {"event_fields": "type"},
        {"event_format": "raw"},
        {"presence": []},
    ],
)
def test_invalid_filters_are_rejected(bad):
    with pytest.raises(FilterError):
        validate_filter_json(bad)
    with pytest.raises(FilterError):
        Filter.from_json(bad)


def test_valid_filter_with_unknown_keys_is_accepted():
    spec_example = {
        "room": {
            "state": {"types": ["m.room.*"], "not_rooms": ["!726s6s6q:example.com"]},
            "timeline": {"limit": 10, "types": ["m.room.message"], "not_senders": ["@spam:e.com"]},
            "ephemeral": {"types": ["m.receipt", "m.typing"]},
        },
        "presence": {"types": ["m.presence"], "not_senders": ["@alice:example.com"]},
        "event_format": "client",
        "event_fields": ["type", "content", "sender"],
        "org.example.future": {"anything": True},
    }
    assert Filter.from_json(spec_example).timeline_limit == 10


def test_event_fields_keep_only_the_given_paths():
    event = {
        "type": "m.room.message",
        "content": {"body": "hi", "m.relates_to": {"rel_type": "x"}, "a.b": 1},
        "sender": "@a:hs",
        "unsigned": {"age": 5},
    }
    assert only_fields(event, ["type", "content.body"]) == {
        "type": "m.room.message",
        "content": {"body": "hi"},
    }
    # "\." is a literal dot in a key; missing paths are skipped.
    assert only_fields(event, [r"content.a\.b", "content.missing", "nope.x"]) == {
        "content": {"a.b": 1}
    }
    f = Filter({"event_fields": ["unsigned.age"]})
    assert f.apply_event_fields(event) == {"unsigned": {"age": 5}}
    assert Filter().apply_event_fields(event) is event
