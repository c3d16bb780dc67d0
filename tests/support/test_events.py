"""The test event builders produce events in each room version's wire format
and pick auth events with the selection algorithm."""

from __future__ import annotations

import pytest

from atrium.events.room_versions import KNOWN_ROOM_VERSIONS, V1, V10
from tests.support.events import RoomBuilder, make_pdu, standard_room


def test_v1_events_carry_an_event_id_on_the_senders_server_and_reference_pairs():
    event = make_pdu(
        V1, type="m.room.message", sender="@a:one.org", prev_events=["$p:x"], auth_events=["$a:x"]
    )
    assert event.event_id.endswith(":one.org")
    assert event.as_dict_ref()["prev_events"][0][0] == "$p:x"
    assert event.prev_event_ids() == ["$p:x"] and event.auth_event_ids() == ["$a:x"]


def test_v3_plus_events_have_content_derived_ids_and_plain_references():
    event = make_pdu(V10, type="m.room.message", sender="@a:one.org", prev_events=["$p"])
    assert "event_id" not in event.as_dict_ref()
    assert event.as_dict_ref()["prev_events"] == ["$p"]


def test_identical_events_get_distinct_ids():
    first = make_pdu(V10, type="m.room.message", sender="@a:one.org")
    second = make_pdu(V10, type="m.room.message", sender="@a:one.org")
    assert first.event_id != second.event_id


@pytest.mark.parametrize(
    "rv", list(KNOWN_ROOM_VERSIONS.values()), ids=lambda rv: f"v{rv.identifier}"
)
def test_standard_room_state_and_auth_event_choice(rv):
    room = standard_room(rv, join_rule="invite", members=["@bob:other.org"])
    assert set(room.state) == {
        ("m.room.create", ""),
        ("m.room.member", room.creator),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.member", "@bob:other.org"),
    }
    join = room.state[("m.room.member", "@bob:other.org")]
    # create, power levels, join rules and Bob's own previous (invite) membership
    assert set(room.auth_events_of(join)) == {
        ("m.room.create", ""),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.member", "@bob:other.org"),
    }
    assert room.auth_events_of(join)[("m.room.member", "@bob:other.org")].membership == "invite"


def test_room_builder_chains_prev_events_and_depth():
    room = RoomBuilder(V10)
    create = room.create()
    join = room.member(room.creator, "join")
    assert join.prev_event_ids() == [create.event_id]
    assert join.depth == create.depth + 1
