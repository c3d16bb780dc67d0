"""Forked rooms for the state resolution tests.

Builds on tests.support.events.RoomBuilder (a linear room): ``fork`` makes
a second builder that continues from the same point with its own copy of
the state, sharing the registry of events, so each fork's state is the
state after its last event.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from atrium.auth.rules import AuthError, check_auth_rules_for_event
from atrium.events.event import Event
from atrium.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, StateResolutionVersion
from atrium.state import StateMap, resolve_events
from atrium.state.memory_store import InMemoryStateResolutionStore
from tests.support.events import CREATOR, RoomBuilder

T = TypeVar("T")

ALICE = CREATOR  # creates standard_room rooms, power level 100
BOB = "@bob:other.org"
CAROL = "@carol:third.org"
DAVE = "@dave:example.org"
EVE = "@eve:evil.org"

PL = ("m.room.power_levels", "")
JR = ("m.room.join_rules", "")
TOPIC = ("m.room.topic", "")


def member_key(user_id: str) -> tuple[str, str]:
    return ("m.room.member", user_id)


V2_VERSIONS: list[RoomVersion] = [
    rv for rv in KNOWN_ROOM_VERSIONS.values() if rv.state_res == StateResolutionVersion.V2
]


def vid(rv: RoomVersion) -> str:
    return f"v{rv.identifier}"


def fork(room: RoomBuilder) -> RoomBuilder:
    """A builder continuing from the room's current last event and state."""
    branch = RoomBuilder(room.room_version, room.room_id, room.creator)
    branch.events = room.events
    branch.state = dict(room.state)
    branch.last_event_id = room.last_event_id
    branch.depth = room.depth
    return branch


def state_of(room: RoomBuilder) -> StateMap:
    return {key: event.event_id for key, event in room.state.items()}


def is_allowed(room: RoomBuilder, event: Event) -> bool:
    """Whether the event passes auth against its own auth events."""
    try:
        check_auth_rules_for_event(room.room_version, event, room.auth_events_of(event))
    except AuthError:
        return False
    return True


async def resolve(room: RoomBuilder, *states: StateMap) -> StateMap:
    """Resolve states of (forks of) ``room`` with every event in the store."""
    store = InMemoryStateResolutionStore(room.events.values())
    return await resolve_events(room.room_id, room.room_version, list(states), None, store)


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never waits on I/O (everything in memory) to
    completion without a reactor; for hypothesis tests, whose many examples
    per test do not mix with pytest-twisted's one-Deferred-per-test."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise AssertionError("the coroutine waited on something")
