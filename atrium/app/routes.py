"""Which process type serves which group of endpoints.

Every servlet registers under one group; this table says which worker types
serve each group. The master serves everything; the reverse-proxy config is
generated from this table, so the two can never disagree.

Why the groups are cut where they are: a worker may serve a write only if
the streams that write touches are written by a process it can reach.
Events go to their room's events writer from any process (send_events
replication endpoint), so "client_write" can be served anywhere. So can
writes of plain tables that no stream follows and whose ids the database
allocates in the writing transaction (server-side key backups: versions
are MAX + 1, a key's replacement rule is one upsert; pushers): they are
"client_write" too, and their reads, which only read the database,
"client_read". Typing,
receipts, account data, push rules, presence, profiles, keys, to-device and
filters are streams (or tables with in-process id allocation) written by
the master alone: their writes are "client_master", served only there.
"""

from __future__ import annotations

from typing import Any

from atrium.http.server import Route, Router

# group -> what it covers
ROUTE_GROUPS: dict[str, str] = {
    "client_account": "registration, login, logout, password and device changes",
    "client_read": "client-server reads: room state, members, messages, profiles, versions",
    "client_write": (
        "client-server writes any process can make: events (send, state, membership,"
        " redactions, rooms) and plain tables without a stream (key backups, pushers)"
    ),
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


# Groups no reverse proxy exposes: process-to-process endpoints (they check the
# worker_replication_secret too; refusing them at the edge is defence in depth).
INTERNAL_GROUPS: frozenset[str] = frozenset({"replication"})

# How a reverse proxy spreads requests across several workers of one type:
# "user" pins a user's requests (hash of the access token) to one worker so
# its /sync caches stay warm; "room" pins a room's writes (hash of the room
# ID in the path) to one event writer, so one room's events are always
# handed over by the same process. Types not listed are balanced freely.
STICKY_BY: dict[str, str] = {"sync": "user", "event_writer": "room"}


def register_servlets(hs: Any, router: Router, *, federation: bool) -> None:
    """Register every HTTP servlet on ``router`` (each under its group).

    The one list of servlet modules: the composition root mounts it, and
    ``collect_routes`` reads it to generate reverse-proxy configs.
    """
    from atrium.api import admin, health
    from atrium.api.client import (
        account,
        account_data,
        directory,
        ephemeral,
        filter,
        keys,
        meta,
        presence,
        profile,
        push_rules,
        pushers,
        room_keys,
        room_read,
        room_write,
        sync,
        threepid,
        voip,
    )

    modules: list[Any] = [admin, meta, account, room_write, keys, sync, filter, room_read]
    modules += [directory, ephemeral, account_data, push_rules, presence, profile, health]
    modules += [room_keys, voip, pushers, threepid]
    if federation:
        from atrium.api.federation import keys as federation_keys
        from atrium.api.federation import transport as federation_transport

        modules += [federation_keys, federation_transport]
    for module in modules:
        module.register_servlets(hs, router)


class _Anything:
    """Stands in for any collaborator: servlet registration only stores
    references to them, so the routes can be listed without a database."""

    def __getattr__(self, name: str) -> _Anything:
        return _Anything()

    def __call__(self, *args: Any, **kwargs: Any) -> _Anything:
        return _Anything()

    def __iter__(self) -> Any:
        return iter(())


def collect_routes(*, federation: bool = True) -> list[Route]:
    """Every route a process can serve (send_events included), without running one."""
    from atrium.handlers.event_writer import SEND_EVENTS_ENDPOINT
    from atrium.replication import http as replication_http

    hs: Any = _Anything()
    router = Router()
    replication_http.register_servlets(hs, router)
    replication_http.register_replication_endpoint(hs, router, SEND_EVENTS_ENDPOINT, hs.handle)
    if federation:
        from atrium.handlers.federation_edu import FEDERATION_EDUS_ENDPOINT

        replication_http.register_replication_endpoint(
            hs, router, FEDERATION_EDUS_ENDPOINT, hs.handle
        )
    register_servlets(hs, router, federation=federation)
    return router.routes
