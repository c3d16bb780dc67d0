"""Properties of resolution on random forked rooms: the answer does not
depend on the order of the state sets, unconflicted state is kept (v2), and
events the caller holds unpersisted give the same auth difference as
persisted ones."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atrium.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, StateResolutionVersion
from atrium.state import resolve_events
from atrium.state.auth_difference import get_auth_difference
from atrium.state.memory_store import InMemoryStateResolutionStore
from atrium.state.v2 import separate
from tests.state.helpers import ALICE, BOB, CAROL, DAVE, EVE, fork, is_allowed, run_sync, state_of
from tests.support.events import RoomBuilder, standard_room

USERS = [ALICE, BOB, CAROL, DAVE, EVE]
LEVELS = [0, 20, 50, 100]
VERSIONS = [KNOWN_ROOM_VERSIONS[v] for v in ("1", "2", "10", "11")]


def random_event(data: st.DataObject, room: RoomBuilder):
    """One random event on top of a fork; it may or may not pass auth."""
    sender = data.draw(st.sampled_from(USERS))
    target = data.draw(st.sampled_from(USERS))
    # Small timestamps so that ties (broken by event ID) happen.
    ts = data.draw(st.integers(0, 4))
    kind = data.draw(
        st.sampled_from(["topic", "power", "ban", "kick", "join", "leave", "join_rules", "invite"])
    )
    if kind == "topic":
        return room.build("m.room.topic", sender, {"topic": str(ts)}, "", origin_server_ts=ts)
    if kind == "power":
        users = {ALICE: 100, **{u: data.draw(st.sampled_from(LEVELS)) for u in (BOB, CAROL)}}
        return room.build("m.room.power_levels", sender, {"users": users}, "", origin_server_ts=ts)
    if kind == "join_rules":
        rule = data.draw(st.sampled_from(["public", "invite"]))
        return room.build("m.room.join_rules", sender, {"join_rule": rule}, "", origin_server_ts=ts)
    membership = {"kick": "leave", "join": "join", "leave": "leave"}.get(kind, kind)
    if kind in ("join", "leave"):
        sender = target
    return room.build(
        "m.room.member", sender, {"membership": membership}, target, origin_server_ts=ts
    )


def forked_room(data: st.DataObject, rv: RoomVersion) -> tuple[RoomBuilder, list[RoomBuilder]]:
    """A room, then 2-4 forks, each continuing from the room or from an
    earlier fork, with up to 4 events each (those that pass auth)."""
    room = standard_room(rv, members=[BOB, CAROL], users={BOB: 50, CAROL: 20})
    forks: list[RoomBuilder] = []
    for _ in range(data.draw(st.integers(2, 4))):
        parent = data.draw(st.sampled_from([room, *forks]))
        branch = fork(parent)
        for _ in range(data.draw(st.integers(0, 4))):
            event = random_event(data, branch)
            if is_allowed(branch, event):
                branch.add(event)
        forks.append(branch)
    return room, forks


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_resolution_does_not_depend_on_the_order_of_the_state_sets(data):
    # (Room versions drawn here, not parametrized: pytest-twisted's hypothesis
    # support does not survive a parametrized hypothesis test.)
    rv = data.draw(st.sampled_from(VERSIONS))
    room, forks = forked_room(data, rv)
    states = [state_of(f) for f in forks]
    store = InMemoryStateResolutionStore(room.events.values())
    expected = run_sync(resolve_events(room.room_id, rv, states, None, store))
    shuffled = data.draw(st.permutations(states))
    assert run_sync(resolve_events(room.room_id, rv, shuffled, None, store)) == expected
    if rv.state_res == StateResolutionVersion.V2:
        unconflicted, _ = separate(states)
        assert expected.items() >= unconflicted.items()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_unpersisted_events_give_the_same_auth_difference(data):
    """Everything created after a cut-off is only in event_map (auth events
    are always created, so persisted, before the events citing them)."""
    rv = KNOWN_ROOM_VERSIONS["10"]
    room, forks = forked_room(data, rv)
    state_sets = [set(state_of(f).values()) for f in forks]
    everything = list(room.events.values())
    cut = data.draw(st.integers(0, len(everything)))
    store = InMemoryStateResolutionStore(everything[:cut])
    event_map = {e.event_id: e for e in everything[cut:]}

    full_store = InMemoryStateResolutionStore(everything)
    expected = run_sync(full_store.get_auth_chain_difference(room.room_id, state_sets))
    assert run_sync(get_auth_difference(room.room_id, state_sets, event_map, store)) == expected
