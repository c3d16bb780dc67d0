"""Benchmark: resolve 10 conflicting forks of a room with 1,000 joined members.

    python bench/state_res.py [--members 1000] [--forks 10] [--runs 7] [--room-version 10]

The room is built in memory: create, power levels (10 moderators at 50),
public join rules, then the members join one by one. Fork i branches off
20*i joins before the end (so the members who joined after are missing from
it: conflicted keys), then makes power level and membership changes: the
admin promotes someone, a moderator kicks, bans and invites, some members
leave, rename themselves or join, and a moderator sets the topic.

Prints the size of the problem and the median time of resolve_events over
several runs (each resolution starts from nothing: only the store's per-event
walk depths, which a database keeps as a column, carry over from the first).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from atrium.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion  # noqa: E402
from atrium.state import StateMap, resolve_events  # noqa: E402
from atrium.state.memory_store import InMemoryStateResolutionStore  # noqa: E402
from atrium.state.v2 import separate  # noqa: E402
from tests.support.events import CREATOR, RoomBuilder, standard_room  # noqa: E402

ADMIN = CREATOR


def user(i: int) -> str:
    return f"@user{i}:server{i % 25}.example"


def fork(room: RoomBuilder) -> RoomBuilder:
    branch = RoomBuilder(room.room_version, room.room_id, room.creator)
    branch.events = room.events
    branch.state = dict(room.state)
    branch.last_event_id = room.last_event_id
    branch.depth = room.depth
    return branch


def build_room(rv: RoomVersion, members: int, forks: int) -> tuple[RoomBuilder, list[StateMap]]:
    moderators = [user(i) for i in range(forks)]
    room = standard_room(rv, users={m: 50 for m in moderators})
    branch_points = {members - 20 * i: i for i in range(forks)}
    branches: dict[int, RoomBuilder] = {}
    for i in range(members):
        if i in branch_points:
            branches[branch_points[i]] = fork(room)
        room.member(user(i), "join")
    if members in branch_points:
        branches[branch_points[members]] = fork(room)

    states: list[StateMap] = []
    for f in range(forks):
        branch = branches[f]
        mod = moderators[f]
        # Members every fork has (joined before the earliest branch point).
        base = forks + 10 * f
        users_map = {ADMIN: 100, **{m: 50 for m in moderators}, user(base): 50}
        branch.send("m.room.power_levels", ADMIN, {"users": users_map}, "")
        for k in range(3):
            branch.send("m.room.member", mod, {"membership": "leave"}, user(base + 1 + k))
        for k in range(2):
            branch.send("m.room.member", mod, {"membership": "ban"}, user(base + 4 + k))
        for k in range(2):
            branch.member(user(base + 6 + k), "leave")
        branch.member(user(base + 8), "join", displayname=f"renamed in fork {f}")
        branch.send("m.room.member", mod, {"membership": "invite"}, f"@guest{f}:else.example")
        branch.member(f"@newcomer{f}:else.example", "join")
        branch.send("m.room.topic", mod, {"topic": f"fork {f}"}, "")
        states.append({key: event.event_id for key, event in branch.state.items()})
    return room, states


async def resolve_once(
    room: RoomBuilder, states: list[StateMap], store: InMemoryStateResolutionStore
) -> tuple[float, float, StateMap]:
    """(wall ms, CPU ms, resolved state). CPU time is the steadier number on
    a machine shared with other work."""
    wall, cpu = time.perf_counter(), time.process_time()
    resolved = await resolve_events(room.room_id, room.room_version, states, None, store)
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000, resolved


def run(coroutine):  # type: ignore[no-untyped-def]
    """Everything is in memory: the coroutine completes without a reactor."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("resolution waited on I/O")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--forks", type=int, default=10)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--room-version", default="10")
    args = parser.parse_args()
    rv = KNOWN_ROOM_VERSIONS[args.room_version]

    started = time.perf_counter()
    room, states = build_room(rv, args.members, args.forks)
    built_ms = (time.perf_counter() - started) * 1000
    unconflicted, conflicted = separate(states)
    state_sets = [set(s.values()) for s in states]
    difference = run(
        InMemoryStateResolutionStore(room.events.values()).get_auth_chain_difference(
            room.room_id, state_sets
        )
    )
    print(
        f"room v{rv.identifier}: {len(room.events)} events, {args.forks} state sets of "
        f"{min(map(len, states))}-{max(map(len, states))} entries (built in {built_ms:.0f} ms)"
    )
    print(
        f"unconflicted keys {len(unconflicted)}, conflicted events {len(conflicted)}, "
        f"auth difference {len(difference)}, full conflicted set {len(conflicted | difference)}"
    )

    # The first resolution on a new store also computes the depths the auth
    # chain walk orders events by (a database stores them with the event).
    store = InMemoryStateResolutionStore(room.events.values())
    cold_ms, _, resolved = run(resolve_once(room, states, store))
    timings, cpu_timings = [], []
    for _ in range(args.runs):
        ms, cpu_ms, again = run(resolve_once(room, states, store))
        assert again == resolved
        timings.append(ms)
        cpu_timings.append(cpu_ms)
    joined = sum(
        1
        for key, event_id in resolved.items()
        if key[0] == "m.room.member" and room.events[event_id].membership == "join"
    )
    print(f"resolved state: {len(resolved)} entries, {joined} joined members")
    print(
        f"resolve_events: median {statistics.median(timings):.1f} ms per resolution "
        f"(min {min(timings):.1f}, max {max(timings):.1f}, {args.runs} runs; "
        f"first on a new store {cold_ms:.1f} ms)"
    )
    print(f"               CPU median {statistics.median(cpu_timings):.1f} ms per resolution")


if __name__ == "__main__":
    main()
