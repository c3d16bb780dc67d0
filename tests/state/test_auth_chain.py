"""The converging auth chain walk (atrium.state.auth_chain) against the
definition: union minus intersection of each state set's full auth chain,
the state set's own events included."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st

from atrium.state.auth_chain import auth_chain_difference
from tests.state.helpers import run_sync

Graph = dict[str, tuple[int, list[str]]]  # event -> (depth, auth events)


def naive_difference(graph: Graph, state_sets: Sequence[Collection[str]]) -> set[str]:
    """Load every full auth chain and diff them: the definition, slowly."""
    chains = []
    for state_set in state_sets:
        chain: set[str] = set()
        stack = list(state_set)
        while stack:
            event_id = stack.pop()
            if event_id not in chain:
                chain.add(event_id)
                stack.extend(graph.get(event_id, (0, []))[1])
        chains.append(chain)
    if len(chains) < 2:
        return set()
    return set[str]().union(*chains) - chains[0].intersection(*chains[1:])


class Fetcher:
    """Serves a graph from memory and records every batch asked for."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.batches: list[list[str]] = []

    async def __call__(self, event_ids: Collection[str]) -> dict[str, tuple[int, list[str]]]:
        self.batches.append(list(event_ids))
        return {e: self.graph[e] for e in event_ids if e in self.graph}

    @property
    def fetched(self) -> list[str]:
        return [e for batch in self.batches for e in batch]


@st.composite
def dags(draw, honest_depths: bool = True):
    """A random auth DAG (events only cite earlier ones) and 1-5 state sets.

    With honest depths an event is deeper than each of its auth events, as
    for events built by the rules; otherwise depths are arbitrary.
    """
    size = draw(st.integers(1, 25))
    graph: Graph = {}
    for i in range(size):
        auth = sorted(draw(st.sets(st.integers(0, i - 1), max_size=4))) if i else []
        auth_ids = [f"e{a}" for a in auth]
        if honest_depths:
            depth = 1 + max((graph[a][0] for a in auth_ids), default=0) + draw(st.integers(0, 2))
        else:
            depth = draw(st.integers(0, 30))
        graph[f"e{i}"] = (depth, auth_ids)
    names = sorted(graph)
    state_sets = draw(st.lists(st.sets(st.sampled_from(names), max_size=6), min_size=1, max_size=5))
    return graph, state_sets


@settings(max_examples=300, deadline=None)
@given(dags())
def test_walk_equals_naive_difference_on_random_dags(case):
    graph, state_sets = case
    fetch = Fetcher(graph)
    assert run_sync(auth_chain_difference(state_sets, fetch)) == naive_difference(graph, state_sets)
    # Each event is asked for at most once.
    assert len(fetch.fetched) == len(set(fetch.fetched))


@settings(max_examples=300, deadline=None)
@given(dags(honest_depths=False))
def test_walk_with_forged_depths_never_misses_an_event_of_the_difference(case):
    """Depths that do not decrease along auth_events can make the walk stop
    too early, but only ever by reporting extra events, never fewer."""
    graph, state_sets = case
    result = run_sync(auth_chain_difference(state_sets, Fetcher(graph)))
    assert result >= naive_difference(graph, state_sets)


def linear_chain(length: int) -> Graph:
    graph: Graph = {"c0": (1, [])}
    for i in range(1, length):
        graph[f"c{i}"] = (i + 1, [f"c{i - 1}"])
    return graph


@pytest_twisted.ensureDeferred
async def test_walk_stops_where_the_chains_converge():
    """Two forks on top of a 1,000-event chain: only the top is walked."""
    graph = linear_chain(1000)
    graph["a"] = (1001, ["c999"])
    graph["b"] = (1001, ["c999"])
    graph["a2"] = (1002, ["a", "c998"])
    fetch = Fetcher(graph)
    assert await auth_chain_difference([{"a2"}, {"b"}], fetch) == {"a", "a2", "b"}
    assert len(fetch.fetched) < 10
    # One batch per step down the frontier, not one per event.
    assert len(fetch.batches) <= 4


@pytest_twisted.ensureDeferred
async def test_state_events_count_as_part_of_their_own_chain():
    """A state event cited by the other set's event is in both chains."""
    graph: Graph = {
        "create": (1, []),
        "old_pl": (2, ["create"]),
        "new_pl": (3, ["old_pl", "create"]),
    }
    result = await auth_chain_difference(
        [{"create", "old_pl"}, {"create", "new_pl"}], Fetcher(graph)
    )
    assert result == {"new_pl"}


@pytest_twisted.ensureDeferred
async def test_event_reached_again_after_it_was_walked_passes_on_its_new_bits():
    """x has a forged depth above its child's, so it is popped before the
    child adds set 1 to it; re-pushing x must carry set 1 on to y, which
    both sets then reach."""
    graph: Graph = {
        "y": (1, []),
        "x": (50, ["y"]),  # forged: deeper than its child below
        "child": (10, ["x"]),
        "s0": (60, ["x"]),
        "s1": (40, ["child"]),
    }
    result = await auth_chain_difference([{"s0"}, {"s1"}], Fetcher(graph))
    assert result == naive_difference(graph, [{"s0"}, {"s1"}]) == {"s0", "s1", "child"}


@pytest_twisted.ensureDeferred
async def test_prefetched_events_are_not_asked_for_again():
    graph = linear_chain(20)
    graph["a"] = (21, ["c19"])
    graph["b"] = (21, ["c5"])
    calls: list[list[str]] = []

    async def prefetching(event_ids: Collection[str]) -> dict[str, tuple[int, list[str]]]:
        calls.append(list(event_ids))
        return dict(graph)  # everything, every time

    assert await auth_chain_difference([{"a"}, {"b"}], prefetching) == naive_difference(
        graph, [{"a"}, {"b"}]
    )
    assert len(calls) == 1


@pytest_twisted.ensureDeferred
async def test_unknown_events_count_as_chain_ends():
    """An auth event the fetcher cannot find is still part of the chains
    that reach it."""
    graph: Graph = {"a": (5, ["missing", "shared"]), "b": (5, ["shared"]), "shared": (1, [])}
    assert await auth_chain_difference([{"a"}, {"b"}], Fetcher(graph)) == {"a", "b", "missing"}


@pytest_twisted.ensureDeferred
async def test_fewer_than_two_state_sets_have_no_difference():
    graph = linear_chain(3)
    assert await auth_chain_difference([{"c2"}], Fetcher(graph)) == set()
    assert await auth_chain_difference([], Fetcher(graph)) == set()
