"""Helpers shared by the auth rule tests: version tables and check shortcuts."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from atrium.auth.rules import (
    AuthError,
    check_auth_rules_for_event,
    check_state_independent_auth_rules,
)
from atrium.events.event import Event
from atrium.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from tests.support.events import RoomBuilder

ALL_VERSIONS: list[RoomVersion] = list(KNOWN_ROOM_VERSIONS.values())


def number(rv: RoomVersion) -> int:
    """The room version as a number, for "v7 and later" style tables."""
    return int(rv.identifier)


def vid(rv: RoomVersion) -> str:
    return f"v{rv.identifier}"


every_version = pytest.mark.parametrize("rv", ALL_VERSIONS, ids=vid)

ALICE = "@alice:example.org"  # a room creator's fellow local user
BOB = "@bob:other.org"
CAROL = "@carol:third.org"
MOD = "@mod:example.org"


def check(room: RoomBuilder, event: Event) -> None:
    """Run the rules with the auth events the event lists.

    The state independent half first sees every event of the room by ID
    (so duplicate or foreign auth events are visible to it), then
    check_auth_rules_for_event runs both halves on the listed auth events.
    """
    check_state_independent_auth_rules(room.room_version, event, room.events)
    check_auth_rules_for_event(room.room_version, event, room.auth_events_of(event))


def is_allowed(room: RoomBuilder, event: Event) -> bool:
    try:
        check(room, event)
    except AuthError:
        return False
    return True


def rejection(room: RoomBuilder, event: Event) -> str:
    """The reason the event is rejected; fails the test if it is allowed."""
    with pytest.raises(AuthError) as err:
        check(room, event)
    return err.value.reason


def versions_where(predicate: Callable[[int], bool]) -> list[RoomVersion]:
    """Room versions whose number satisfies ``predicate`` (e.g. lambda n: n >= 7)."""
    return [rv for rv in ALL_VERSIONS if predicate(number(rv))]


def some_versions(predicate: Callable[[int], bool]) -> pytest.MarkDecorator:
    """Parametrize a test over the room versions matching ``predicate``."""
    return pytest.mark.parametrize("rv", versions_where(predicate), ids=vid)
