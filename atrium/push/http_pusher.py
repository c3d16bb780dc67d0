"""HTTP pushers: sending notifications to push gateways (client-server API
"Push Notifications", push gateway API ``POST /_matrix/push/v1/notify``).

Runs on the master only (the composition root builds it there): one
``PusherService`` follows the events stream; whenever it advances, it reads
the http pushers (one statement) and the new notifying push actions of their
users (one statement) and hands each pusher its own queue. Each pusher sends
its queue in stream order, one request at a time: a failing gateway (network
error, 5xx, 429) is retried with exponential back-off (``RETRY_INITIAL_S``
doubling up to ``RETRY_MAX_S``) and blocks only that pusher; a 4xx other
than 429 drops that one notification. A pushkey the gateway lists as
``rejected`` deletes the pusher (spec). How far each pusher has sent is
stored (``pushers.last_stream_ordering``), so a restart neither re-sends nor
skips; a new pusher starts at the position it was first seen (no history).

``data.format == "event_id_only"`` sends the event ID, room ID and counts
only; otherwise the event's type, sender, sender display name, room name
and content are included too. ``counts.unread`` is the user's unread
notification count over all rooms as of the pushed event (the events up to
it after the user's receipts, read when the request is built).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable, Mapping
from io import BytesIO
from typing import Any

from twisted.internet import defer
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from atrium.storage.stores.event_push_actions import EventPushActionsStore, PendingPush
from atrium.storage.stores.events import EventsStore
from atrium.storage.stores.pushers import PusherStore, StoredPusher
from atrium.storage.stores.roommember import MEMBER, RoomMemberStore
from atrium.util.clock import Clock

logger = logging.getLogger(__name__)

RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 3600.0
REQUEST_TIMEOUT_S = 30.0
_BATCH = 1000


def tweaks_of(actions: list[Any]) -> dict[str, Any]:
    """set_tweak actions as the ``tweaks`` object (highlight defaults to true)."""
    tweaks: dict[str, Any] = {}
    for action in actions:
        if isinstance(action, dict) and isinstance(action.get("set_tweak"), str):
            name = action["set_tweak"]
            tweaks[name] = action.get("value", True) if name == "highlight" else action.get("value")
    return tweaks


class _GatewayError(Exception):
    def __init__(self, retry: bool, message: str) -> None:
        super().__init__(message)
        self.retry = retry


class HttpPusher:
    """One pusher's queue and its sending loop."""

    def __init__(self, service: PusherService, stored: StoredPusher, position: int) -> None:
        self.service = service
        self.stored = stored
        # Everything up to here is sent or queued.
        self.queued_upto = position
        self.queue: deque[PendingPush] = deque()
        self.running = False
        self.stopped = False
        self.backoff = service.retry_initial_s

    @property
    def key(self) -> tuple[str, str, str]:
        p = self.stored.pusher
        return (self.stored.user_id, p.app_id, p.pushkey)

    def enqueue(self, pushes: list[PendingPush], upto: int) -> None:
        self.queue.extend(p for p in pushes if p.stream_ordering > self.queued_upto)
        self.queued_upto = max(self.queued_upto, upto)
        if not self.running and self.queue:
            self.running = True
            defer.ensureDeferred(self._run())

    async def _run(self) -> None:
        try:
            while self.queue and not self.stopped:
                push = self.queue[0]
                try:
                    rejected = await self.service.send(self.stored, push)
                except _GatewayError as e:
                    if e.retry:
                        logger.info(
                            "push to %s failed (%s): retrying in %.0fs",
                            self.stored.pusher.data.get("url"),
                            e,
                            self.backoff,
                        )
                        await self.service.clock.sleep(self.backoff)
                        self.backoff = min(self.backoff * 2, RETRY_MAX_S)
                        continue
                    logger.warning("push of %s dropped: %s", push.event_id, e)
                    rejected = False
                self.backoff = self.service.retry_initial_s
                self.queue.popleft()
                if rejected:
                    await self.service.remove(self)
                    return
                await self.service.pushers.set_last_stream_ordering(*self.key, push.stream_ordering)
        except Exception:
            logger.exception("pusher %s stopped", self.key)
        finally:
            self.running = False


class PusherService:
    """Finds new notifications for http pushers and has each pusher send them."""

    def __init__(
        self,
        *,
        pushers: PusherStore,
        actions: EventPushActionsStore,
        events: EventsStore,
        members: RoomMemberStore,
        clock: Clock,
        reactor: Any,
        events_position: Callable[[], int],
    ) -> None:
        self.pushers = pushers
        self.actions = actions
        self.events = events
        self.members = members
        self.clock = clock
        self.reactor = reactor
        self.events_position = events_position
        self._pushers: dict[tuple[str, str, str], HttpPusher] = {}
        self._processing = False
        self._again = False
        self._started = False
        # The pushers table is read again only after a PUSHERS_CHANGED
        # invalidation, not on every advance of the events stream.
        self._pushers_stale = True
        # First retry delay of a failing gateway (doubles up to RETRY_MAX_S).
        self.retry_initial_s = RETRY_INITIAL_S
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 4
        self._pool = pool
        self._agent = Agent(reactor, pool=pool)

    # -- service ------------------------------------------------------------------
    async def start(self) -> None:
        self._started = True
        self.poke()

    async def stop(self) -> None:
        self._started = False
        for pusher in self._pushers.values():
            pusher.stopped = True
        await self._pool.closeCachedConnections()

    def pushers_changed(self) -> None:
        self._pushers_stale = True
        self.poke()

    def on_new_data(self, stream: str, token: Any, users: Any = (), rooms: Any = ()) -> None:
        """Notifier observer: new events may have notified someone."""
        if stream == "events":
            self.poke()

    def poke(self) -> None:
        if not self._started:
            return
        if self._processing:
            self._again = True
            return
        self._processing = True
        defer.ensureDeferred(self._process_loop())

    async def _process_loop(self) -> None:
        try:
            while True:
                self._again = False
                try:
                    await self._process()
                except Exception:
                    logger.exception("looking for pushes failed")
                if not self._again:
                    return
        finally:
            self._processing = False

    async def _process(self) -> None:
        # The minimum events position: every event at or below it is persisted.
        upto = self.events_position()
        if self._pushers_stale:
            # Cleared first: a change during the read marks it stale again.
            self._pushers_stale = False
            try:
                await self._load_pushers(upto)
            except Exception:
                self._pushers_stale = True
                raise
        waiting = [p for p in self._pushers.values() if p.queued_upto < upto]
        if not waiting:
            return
        after = min(p.queued_upto for p in waiting)
        users = {p.stored.user_id for p in waiting}
        while after < upto:
            pushes = await self.actions.get_pending_pushes(users, after, upto, _BATCH)
            reached = upto if len(pushes) < _BATCH else pushes[-1].stream_ordering
            by_user: dict[str, list[PendingPush]] = {}
            for push in pushes:
                by_user.setdefault(push.user_id, []).append(push)
            for pusher in waiting:
                pusher.enqueue(by_user.get(pusher.stored.user_id, []), reached)
            after = reached

    async def _load_pushers(self, upto: int) -> None:
        """(Re)read the http pushers: new ones start at ``upto`` (or their
        stored progress), removed ones stop, changed ones keep their queue."""
        seen: set[tuple[str, str, str]] = set()
        for entry in await self.pushers.get_all_http_pushers():
            p = entry.pusher
            key = (entry.user_id, p.app_id, p.pushkey)
            seen.add(key)
            current = self._pushers.get(key)
            if current is None:
                start = entry.last_stream_ordering
                if start is None:
                    start = upto
                    await self.pushers.set_last_stream_ordering(*key, upto)
                self._pushers[key] = HttpPusher(self, entry, start)
            else:
                current.stored = entry
        for key in set(self._pushers) - seen:
            self._pushers.pop(key).stopped = True

    async def remove(self, pusher: HttpPusher) -> None:
        pusher.stopped = True
        self._pushers.pop(pusher.key, None)
        await self.pushers.delete_pusher(*pusher.key)
        logger.info("pusher %s removed: the gateway rejected its pushkey", pusher.key)

    # -- one request ------------------------------------------------------------------
    async def build_notification(self, stored: StoredPusher, push: PendingPush) -> dict[str, Any]:
        pusher = stored.pusher
        data = {k: v for k, v in pusher.data.items() if k != "url"}
        tweaks = tweaks_of(push.actions)
        device = {
            "app_id": pusher.app_id,
            "pushkey": pusher.pushkey,
            "pushkey_ts": stored.ts_added_ms // 1000,
            "data": data,
            "tweaks": tweaks,
        }
        unread = await self.actions.get_total_unread_count(stored.user_id, push.stream_ordering)
        note: dict[str, Any] = {
            "event_id": push.event_id,
            "room_id": push.room_id,
            "counts": {"unread": unread} if unread else {},
            "devices": [device],
            "prio": "high" if tweaks.get("highlight") or "sound" in tweaks else "low",
        }
        if pusher.data.get("format") == "event_id_only":
            return {"notification": note}
        event = await self.events.get_event(push.event_id, allow_none=True)
        if event is not None:
            note["type"] = event.type
            note["sender"] = event.sender
            if event.content:
                note["content"] = event.content
            if event.type == MEMBER:
                note["user_is_target"] = event.state_key == stored.user_id
            names = await self._names(push.room_id, event.sender)
            note.update(names)
        return {"notification": note}

    async def _names(self, room_id: str, sender: str) -> dict[str, str]:
        state = await self.members.get_current_state_ids(room_id)
        wanted = {
            "sender_display_name": state.get((MEMBER, sender)),
            "room_name": state.get(("m.room.name", "")),
            "room_alias": state.get(("m.room.canonical_alias", "")),
        }
        events = await self.events.get_events([e for e in wanted.values() if e])
        field = {"sender_display_name": "displayname", "room_name": "name", "room_alias": "alias"}
        out: dict[str, str] = {}
        for name, event_id in wanted.items():
            event = events.get(event_id) if event_id else None
            value = event.content.get(field[name]) if event is not None else None
            if isinstance(value, str) and value:
                out[name] = value
        return out

    async def send(self, stored: StoredPusher, push: PendingPush) -> bool:
        """POST one notification; True when the gateway rejected this pushkey."""
        url = stored.pusher.data.get("url")
        if not isinstance(url, str):
            raise _GatewayError(False, "pusher has no url")
        body = await self.build_notification(stored, push)
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        headers = Headers({"Content-Type": ["application/json"]})
        try:
            d = self._agent.request(
                b"POST", url.encode("utf-8"), headers, FileBodyProducer(BytesIO(raw))
            )
            d.addTimeout(REQUEST_TIMEOUT_S, self.reactor)
            response = await d
            answer = await readBody(response)
        except Exception as e:
            raise _GatewayError(True, repr(e)) from e
        if response.code == 429 or response.code >= 500:
            raise _GatewayError(True, f"HTTP {response.code}")
        if response.code != 200:
            raise _GatewayError(False, f"HTTP {response.code}")
        try:
            parsed = json.loads(answer) if answer else {}
        except ValueError:
            parsed = {}
        rejected = parsed.get("rejected") if isinstance(parsed, Mapping) else None
        return isinstance(rejected, list) and stored.pusher.pushkey in rejected
