"""GET /sync (spec: client-server API "Syncing", GET /_matrix/client/v3/sync)."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.errors import InvalidParam
from atrium.http.request import query_bool, query_int, query_string
from atrium.http.server import Router, client_paths
from atrium.sync.handler import SET_PRESENCE_VALUES
from atrium.sync.token import STREAM_KEYS, StreamToken

INT64_MAX = 2**63 - 1
# Longest long-poll we hold (ms); longer requested timeouts are shortened.
MAX_TIMEOUT_MS = 10 * 60 * 1000


def register_servlets(hs: Any, router: Router) -> None:
    auth = hs.auth
    handler = hs.sync_handler
    # Reports who is syncing here to the master's presence (atrium/workers/user_sync.py).
    user_sync = hs.user_sync

    async def sync(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        since_text = query_string(request, "since")
        since = _parse_since(since_text) if since_text else None
        timeout_ms = query_int(request, "timeout", default=0, minimum=0, maximum=MAX_TIMEOUT_MS)
        full_state = query_bool(request, "full_state")
        # Spec: set_presence=offline syncs without marking the user online.
        set_presence = query_string(request, "set_presence", allowed=SET_PRESENCE_VALUES)
        sync_filter = await handler.get_filter(requester.user_id, query_string(request, "filter"))
        affects_presence = set_presence != "offline"
        if affects_presence:
            await user_sync.sync_started(requester.user_id)
        try:
            body = await handler.wait_for_sync(
                requester.user_id,
                requester.device_id,
                since=since,
                timeout_ms=timeout_ms or 0,
                sync_filter=sync_filter,
                full_state=full_state,
            )
        finally:
            if affects_presence:
                user_sync.sync_stopped(requester.user_id)
        return 200, body

    router.register("GET", client_paths("/sync"), sync, "sync")


def _parse_since(text: str) -> StreamToken:
    """A since token, with every position a BIGINT the database can compare."""
    token = StreamToken.parse(text)
    positions = [token.events.stream, *token.events.instance_positions.values()]
    positions += [int(token.get(key)) for key in STREAM_KEYS[1:]]
    if any(p > INT64_MAX for p in positions):
        raise InvalidParam(f"Invalid stream token {text[:100]!r}")
    return token
