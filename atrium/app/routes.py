"""Which process type serves which group of endpoints.

Every servlet registers under one group; this table says which worker types
serve each group. The master serves everything; the reverse-proxy config is
generated from this table, so the two can never disagree.
"""

from __future__ import annotations

# group -> what it covers
ROUTE_GROUPS: dict[str, str] = {
    "client_account": "registration, login, logout, password and device changes",
    "client_read": "client-server reads: room state, members, messages, profiles, versions",
    "client_write": "client-server writes: send, state, membership, redactions, typing, receipts",
    "sync": "/sync, /events and initialSync long-polls",
    "keys": "end-to-end encryption keys and to-device messages",
    "federation": "server-server API reads, joins and /send",
    "federation_keys": "server signing keys (/_matrix/key)",
    "replication": "authenticated replication endpoints between processes",
    "admin": "the admin API",
    "health": "/health/live and /health/ready",
}

# worker_app -> groups it serves. The master (worker_app None) serves all.
WORKER_GROUPS: dict[str, frozenset[str]] = {
    "sync": frozenset({"sync", "health", "replication"}),
    "generic": frozenset({"client_read", "client_write", "keys", "health", "replication"}),
    "event_writer": frozenset({"client_write", "health", "replication"}),
    "federation_reader": frozenset({"federation", "federation_keys", "health", "replication"}),
    "federation_sender": frozenset({"health", "replication"}),
}


def groups_for_app(worker_app: str | None) -> frozenset[str] | None:
    """Route groups served by a worker type; None means every group (master)."""
    if worker_app is None:
        return None
    return WORKER_GROUPS[worker_app]
