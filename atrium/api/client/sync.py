"""GET /sync (spec: client-server API "Syncing", GET /_matrix/client/v3/sync)."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.errors import InvalidParam
from atrium.http.request import query_bool, query_int, query_string
from atrium.http.server import Router, client_paths
from atrium.sync.filtering import Filter
from atrium.sync.handler import SET_PRESENCE_VALUES
from atrium.sync.token import STREAM_KEYS, StreamToken

INT64_MAX = 2**63 - 1
# Longest long-poll we hold (ms); longer requested timeouts are shortened.
MAX_TIMEOUT_MS = 10 * 60 * 1000
# GET /events: up to 100 events per room and response (a busier room's
# older events in that window are skipped, as a limited /sync timeline would).
EVENTS_STREAM_FILTER = Filter.from_json({"room": {"timeline": {"limit": 100}}})


def register_servlets(hs: Any, router: Router) -> None:
    auth = hs.auth
    handler = hs.sync_handler
    # Reports who is syncing here to the master's presence (atrium/workers/user_sync.py).
    user_sync = hs.user_sync
    events_store = hs.stores.events

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

    async def events(request: Request) -> tuple[int, Any]:
        """GET /events: the deprecated (r0) event stream, still used by old clients.

        It is /sync's rooms part, flattened: the timeline events of the
        user's rooms after ``from`` (default: now), each with its room_id,
        waiting up to ``timeout`` ms for one. No other section is computed,
        so to-device messages stay queued for /sync.
        """
        requester = await auth.get_requester(request)
        from_text = query_string(request, "from")
        since = _parse_since(from_text) if from_text else handler.current_token()
        timeout_ms = query_int(request, "timeout", default=0, minimum=0, maximum=MAX_TIMEOUT_MS)
        body = await handler.wait_for_sync(
            requester.user_id,
            requester.device_id,
            since=since,
            timeout_ms=timeout_ms or 0,
            sync_filter=EVENTS_STREAM_FILTER,
            rooms_only=True,
        )
        chunk = [
            {**event, "room_id": room_id}
            for section in ("join", "leave")
            for room_id, entry in body.get("rooms", {}).get(section, {}).items()
            for event in entry.get("timeline", {}).get("events", ())
        ]
        # A newly joined room's /sync timeline holds history from before
        # ``from``: only what was persisted after it belongs to the stream.
        # Rooms come one after the other in /sync; the stream is in stream order.
        loaded = await events_store.get_events([e["event_id"] for e in chunk])
        chunk = [e for e in chunk if _after(since, loaded.get(e["event_id"]))]
        chunk.sort(key=lambda e: loaded[e["event_id"]].internal_metadata.stream_ordering)
        return 200, {"start": since.to_string(), "end": body["next_batch"], "chunk": chunk}

    router.register("GET", client_paths("/events"), events, "sync")


def _after(since: StreamToken, event: Any) -> bool:
    """Whether ``event`` was persisted after ``since`` (per events writer)."""
    if event is None or event.internal_metadata.stream_ordering is None:
        return False
    meta = event.internal_metadata
    return not since.events.includes(meta.stream_ordering, meta.instance_name or "")


def _parse_since(text: str) -> StreamToken:
    """A since token, with every position a BIGINT the database can compare."""
    token = StreamToken.parse(text)
    positions = [token.events.stream, *token.events.instance_positions.values()]
    positions += [int(token.get(key)) for key in STREAM_KEYS[1:]]
    if any(p > INT64_MAX for p in positions):
        raise InvalidParam(f"Invalid stream token {text[:100]!r}")
    return token
