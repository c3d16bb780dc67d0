"""State resolution: the state of a room where its DAG has forked.

resolve.py is the entry point (dispatching on the room version to v1.py or
v2.py); store.py is what it needs from storage; auth_chain.py computes auth
chain differences by a walk a database store can feed in batches;
memory_store.py is a store over events held in memory.
"""

from atrium.state.resolve import resolve_events
from atrium.state.store import StateMap, StateResolutionStore

__all__ = ["StateMap", "StateResolutionStore", "resolve_events"]
