"""RoomEventFilter: parsing errors, Python matching (wildcards, not_* precedence,
contains_url, rooms) and what is handed to SQL."""

from __future__ import annotations

import json

import pytest

from atrium.errors import MatrixError
from atrium.events.room_versions import KNOWN_ROOM_VERSIONS
from atrium.handlers.room_event_filter import parse_room_event_filter
from tests.support.events import ROOM_ID, make_pdu

V10 = KNOWN_ROOM_VERSIONS["10"]


def event(type_: str = "m.room.message", sender: str = "@a:x", **content: object):
    return make_pdu(V10, type=type_, sender=sender, content=dict(content))


def test_empty_filter_matches_everything():
    f = parse_room_event_filter(None)
    assert f.matches(event()) and f.matches(event("org.custom", "@z:y"))
    assert parse_room_event_filter("  ") == f


def test_type_wildcards_match_whole_type_case_sensitively():
    f = parse_room_event_filter('{"types": ["m.room.*", "org.exact"]}')
    assert f.matches(event("m.room.message"))
    assert f.matches(event("org.exact"))
    assert not f.matches(event("org.exactly"))
    assert not f.matches(event("M.ROOM.MESSAGE"))
    assert not f.matches(event("m.call.invite"))
    # A wildcard list cannot be applied exactly in SQL: it is left to Python.
    assert f.sql_filter().types is None


def test_not_lists_win_over_inclusive_lists():
    f = parse_room_event_filter(
        '{"types": ["m.room.*"], "not_types": ["m.room.member"],'
        ' "senders": ["@a:x", "@b:x"], "not_senders": ["@b:x"]}'
    )
    assert f.matches(event("m.room.message", "@a:x"))
    assert not f.matches(event("m.room.member", "@a:x"))
    assert not f.matches(event("m.room.message", "@b:x"))
    sql = f.sql_filter()
    assert sql.types is None and tuple(sql.not_types) == ("m.room.member",)
    assert tuple(sql.senders or ()) == ("@a:x", "@b:x") and tuple(sql.not_senders) == ("@b:x",)


def test_empty_types_list_matches_nothing():
    f = parse_room_event_filter('{"types": []}')
    assert not f.matches(event())
    assert f.sql_filter().matches_nothing()


def test_contains_url_and_rooms():
    with_url = parse_room_event_filter('{"contains_url": true}')
    without_url = parse_room_event_filter('{"contains_url": false}')
    assert with_url.matches(event(url="mxc://x/y")) and not with_url.matches(event())
    assert not with_url.matches(event(url=5)), "a url must be a string"
    assert without_url.matches(event()) and not without_url.matches(event(url="mxc://x/y"))
    assert not parse_room_event_filter(json.dumps({"not_rooms": [ROOM_ID]})).matches(event())
    assert not parse_room_event_filter('{"rooms": ["!other:x"]}').allows_room(ROOM_ID)


@pytest.mark.parametrize(
    "text, errcode",
    [
        ("{", "M_NOT_JSON"),
        ("NaN", "M_NOT_JSON"),
        ("[]", "M_BAD_JSON"),
        ('{"types": "m.room.message"}', "M_BAD_JSON"),
        ('{"senders": [1]}', "M_BAD_JSON"),
        ('{"lazy_load_members": "yes"}', "M_BAD_JSON"),
        ('{"limit": 0}', "M_BAD_JSON"),
        ('{"limit": true}', "M_BAD_JSON"),
    ],
)
def test_bad_filters_are_client_errors(text, errcode):
    with pytest.raises(MatrixError) as caught:
        parse_room_event_filter(text)
    assert caught.value.code == 400 and caught.value.errcode == errcode


def test_limit_and_lazy_loading_are_read():
    f = parse_room_event_filter('{"limit": 5, "lazy_load_members": true}')
    assert f.limit == 5 and f.lazy_load_members
