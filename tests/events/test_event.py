"""The Event model: IDs per format, prev/auth event lists, `redacts` handling."""

from atrium.events.event import make_event_from_dict
from atrium.events.room_versions import KNOWN_ROOM_VERSIONS, V1, V3, V4, V10, V11


def _msg(**extra):
    d = {
        "type": "m.room.message",
        "room_id": "!r:example.org",
        "sender": "@a:example.org",
        "content": {"body": "hi"},
        "depth": 3,
        "origin_server_ts": 1000,
        "prev_events": [],
        "auth_events": [],
        "hashes": {"sha256": "x"},
        "signatures": {},
    }
    d.update(extra)
    return d


def test_v1_event_id_comes_from_the_json():
    ev = make_event_from_dict(_msg(event_id="$abc:example.org", prev_events=[["$p:x", {}]]), V1)
    assert ev.event_id == "$abc:example.org"
    assert ev.prev_event_ids() == ["$p:x"]


def test_v3_and_v4_ids_differ_only_in_base64_alphabet():
    e3 = make_event_from_dict(_msg(), V3).event_id
    e4 = make_event_from_dict(_msg(), V4).event_id
    assert e3.startswith("$") and e4.startswith("$")
    assert e3.replace("+", "-").replace("/", "_") == e4


def test_stored_format_version_wins_over_room_version():
    from atrium.events.room_versions import EventFormatVersion

    ev = make_event_from_dict(_msg(), V10, format_version=EventFormatVersion.V2)
    assert ev.event_id == make_event_from_dict(_msg(), V3).event_id


def test_redacts_is_none_when_missing_in_every_version():
    for rv in KNOWN_ROOM_VERSIONS.values():
        extra = {"event_id": "$r:x"} if rv.is_v1_event_ids else {}
        ev = make_event_from_dict(_msg(type="m.room.redaction", **extra), rv)
        assert ev.redacts is None


def test_redacts_location_depends_on_room_version():
    top = make_event_from_dict(_msg(type="m.room.redaction", redacts="$t"), V10)
    assert top.redacts == "$t"
    inner = make_event_from_dict(_msg(type="m.room.redaction", content={"redacts": "$t"}), V11)
    assert inner.redacts == "$t"
    assert make_event_from_dict(_msg(type="m.room.redaction", redacts=5), V10).redacts is None
