"""SyncHandler: GET /sync — one response, or a long-poll until there is one.

Spec: client-server API "Syncing" and GET /sync.

``wait_for_sync`` computes a response at the current token (read ONCE per
computation: the response covers exactly up to it and ``next_batch`` is
that token). For an incremental sync with a ``timeout`` an empty response
is not sent: the request waits on the notifier (woken by new events in the
user's rooms or by changes addressed to the user) and computes again, until
something is found or the time is up. Initial syncs and ``full_state``
syncs answer at once.

With several processes a client's ``since`` may come from another sync
process that had applied more than this one (clients are not pinned to one
worker). Such a request first waits (at most ``since_wait`` seconds) for this
process to catch up, and every response is computed at the join of the
current token and ``since``: ``next_batch`` never goes back, so nothing is
sent twice.

The rooms part comes from ``RoomsBuilder``; then every section listed in
``sections`` (account data, to-device, device lists, ephemeral...) adds its
part. Incremental syncs log one INFO line with their statistics.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from atrium.errors import InvalidParam
from atrium.storage.stores.filters import FilterStore
from atrium.sync.filtering import DEFAULT_FILTER, Filter, FilterError
from atrium.sync.notifier import Notifier
from atrium.sync.rooms import RoomsBuilder, RoomsStats
from atrium.sync.sections import SyncRequest, SyncSection
from atrium.sync.token import StreamToken
from atrium.util.caches import LruCache

logger = logging.getLogger(__name__)

SET_PRESENCE_VALUES = ("offline", "online", "unavailable")


class SyncHandler:
    def __init__(
        self,
        *,
        rooms: RoomsBuilder,
        filters: FilterStore,
        notifier: Notifier,
        current_token: Callable[[], StreamToken],
        get_joined_rooms: Callable[[str], Any],
        sections: list[SyncSection],
        wait_for_token: Callable[[StreamToken, float], Awaitable[bool]] | None = None,
        since_wait: float = 10.0,
    ) -> None:
        self.rooms = rooms
        self.filters = filters
        self.notifier = notifier
        self.current_token = current_token
        # async (user_id) -> rooms whose events wake this user's long-polls.
        self.get_joined_rooms = get_joined_rooms
        # The composition root's list: other domains append to it after we are built.
        self.sections = sections
        # async (token, timeout) -> whether this process has caught up with token.
        self.wait_for_token = wait_for_token
        self.since_wait = since_wait
        self._parsed: LruCache[tuple[str, str], Filter] = LruCache(10_000, "sync_parsed_filters")

    # -- filters -------------------------------------------------------------------
    async def get_filter(self, user_id: str, filter_param: str | None) -> Filter:
        """The Filter a /sync ``filter`` parameter names: inline JSON or a filter ID."""
        if filter_param is None:
            return DEFAULT_FILTER
        key = (user_id, filter_param)
        parsed = self._parsed.get(key)
        if parsed is not None:
            return parsed
        if filter_param.startswith("{"):
            try:
                filter_json = json.loads(filter_param)
            except ValueError:
                raise InvalidParam("The filter parameter is not valid JSON") from None
        else:
            if not filter_param.isdigit() or len(filter_param) > 18:
                raise InvalidParam(f"Unknown filter {filter_param[:50]!r}")
            filter_json = await self.filters.get_user_filter(user_id, int(filter_param))
            if filter_json is None:
                raise InvalidParam(f"Unknown filter {filter_param!r}")
        try:
            parsed = Filter.from_json(filter_json)
        except FilterError as e:
            raise InvalidParam(str(e)) from None
        self._parsed.set(key, parsed)
        return parsed

    # -- syncing --------------------------------------------------------------------
    async def wait_for_sync(
        self,
        user_id: str,
        device_id: str,
        *,
        since: StreamToken | None,
        timeout_ms: int,
        sync_filter: Filter,
        full_state: bool = False,
        rooms_only: bool = False,
    ) -> dict[str, Any]:
        """The /sync response body for this request (waiting up to ``timeout_ms``).

        ``rooms_only`` leaves out every section but the rooms (the legacy
        GET /events stream): in particular to-device messages, which a
        sync ``since`` acknowledges, are neither sent nor acknowledged.
        """
        started = time.perf_counter()
        if since is not None and not self.current_token().covers(since):
            # Handed out by a process ahead of this one: let this one catch up.
            if self.wait_for_token is not None:
                await self.wait_for_token(since, self.since_wait)
            if since.events.max_position > self.current_token().events.max_position:
                # Not a token this server handed out (or from before a restore).
                raise InvalidParam("The since token is ahead of this server")
        stats = RoomsStats()
        compute_ms = [0.0]

        async def compute(now: StreamToken) -> dict[str, Any]:
            computing = time.perf_counter()
            if since is not None:
                # Never behind the client: a stream where since is ahead
                # contributes an empty range and keeps its position.
                now = now.join(since)
            request = SyncRequest(
                user_id=user_id,
                device_id=device_id,
                since=since,
                now=now,
                filter=sync_filter,
                full_state=full_state,
            )
            response: dict[str, Any] = {}
            room_stats = await self.rooms.build(request, response)
            stats.rooms, stats.events = room_stats.rooms, room_stats.events
            for section in () if rooms_only else self.sections:
                await section.fill(request, response)
            # A section may hold a stream back (e.g. to-device messages
            # beyond one response's limit): next_batch is request.now after them.
            response["next_batch"] = request.now.to_string()
            compute_ms[0] = (time.perf_counter() - computing) * 1000
            return response

        if since is None or full_state or timeout_ms <= 0:
            response = await compute(self.current_token())
        else:
            rooms = await self.get_joined_rooms(user_id)
            response = await self.notifier.wait_for_events(
                user_id, rooms, timeout_ms, compute, _is_empty, since=since
            )
        if since is not None:
            logger.info(
                "incremental sync for %s: %d rooms, %d events, %.1f ms computing, %d ms in total",
                user_id,
                stats.rooms,
                stats.events,
                compute_ms[0],
                int((time.perf_counter() - started) * 1000),
            )
        return response


def _is_empty(response: dict[str, Any]) -> bool:
    """Nothing but next_batch: an incremental sync worth waiting on."""
    return all(key == "next_batch" for key in response)
