"""Which process type serves which group of endpoints.

Every servlet registers under one group; this table says which worker types
serve each group. The master serves everything; the reverse-proxy config is
generated from this table, so the two can never disagree.

Why the groups are cut where they are: a worker may serve a write only if
the streams that write touches are written by a process it can reach.
Events go to their room's events writer from any process (send_events
replication endpoint), so "client_write" can be served anywhere. Typing,
receipts, account data, push rules, presence, profiles, keys, to-device and
filters are streams (or tables with in-process id allocation) written by
the master alone: their writes are "client_master", served only there.
"""

from __future__ import annotations

# group -> what it covers
ROUTE_GROUPS: dict[str, str] = {
    "client_account": "registration, login, logout, password and device changes",
    "client_read": "client-server reads: room state, members, messages, profiles, versions",
    "client_write": "client-server event writes: send, state, membership, redactions, rooms",
    "client_master": (
        "non-event client writes whose streams the master writes: typing, receipts,"
        " read markers, account data, push rules, presence, profile, keys, to-device, filters"
    ),
    "sync": "/sync long-polls",
    "keys": "end-to-end encryption key reads: /keys/query, /keys/changes",
    "federation": "server-server API reads, joins and /send",
    "federation_keys": "server signing keys (/_matrix/key)",
    "replication": "authenticated replication endpoints between processes",
    "admin": "the admin API",
    "health": "/health: liveness of the process",
}

# worker_app -> groups it serves. The master (worker_app None) serves all.
WORKER_GROUPS: dict[str, frozenset[str]] = {
    "sync": frozenset({"sync", "health", "replication"}),
    "generic": frozenset({"client_read", "keys", "health", "replication"}),
    "event_writer": frozenset({"client_write", "health", "replication"}),
    "federation_reader": frozenset({"federation", "federation_keys", "health", "replication"}),
    "federation_sender": frozenset({"health", "replication"}),
}

# Groups only the master serves (what no worker type lists).
MASTER_ONLY_GROUPS: frozenset[str] = frozenset(ROUTE_GROUPS) - frozenset().union(
    *WORKER_GROUPS.values()
)


def groups_for_app(worker_app: str | None) -> frozenset[str] | None:
    """Route groups served by a worker type; None means every group (master)."""
    if worker_app is None:
        return None
    return WORKER_GROUPS[worker_app]
