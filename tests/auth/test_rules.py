"""Entry points of atrium.auth.rules on a whole room, in every room version."""

from __future__ import annotations

import pytest

from atrium.auth.rules import AuthError, check_auth_rules_for_event
from atrium.events.room_versions import KNOWN_ROOM_VERSIONS
from tests.support.events import standard_room

ALL_VERSIONS = list(KNOWN_ROOM_VERSIONS.values())


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=lambda rv: f"v{rv.identifier}")
def test_every_event_of_a_freshly_created_room_passes_auth(rv):
    room = standard_room(rv, members=["@bob:other.org"])
    for event in room.events.values():
        check_auth_rules_for_event(rv, event, room.auth_events_of(event))


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=lambda rv: f"v{rv.identifier}")
def test_member_without_power_cannot_set_topic(rv):
    room = standard_room(rv, members=["@bob:other.org"])
    event = room.build("m.room.topic", "@bob:other.org", {"topic": "x"}, "")
    with pytest.raises(AuthError) as err:
        check_auth_rules_for_event(rv, event, room.auth_events_of(event))
    assert (
        err.value.reason == "sender's power level 0 is below the 50 required to send m.room.topic"
    )
