"""Reading a room's history: /messages and /context (spec: client-server API
"Getting events for a room", GET /rooms/{roomId}/messages and
GET /rooms/{roomId}/context/{eventId}).

Pages are read from PaginationStore in topological order and then cut down
by the RoomEventFilter's Python-only parts and by history visibility. So a
page is not left mostly empty when many events are hidden, a page is filled
in a few rounds (at most ``MAX_ROUNDS``) from where the previous round
stopped; the returned token continues after the last *examined* event, so
hidden events are never scanned twice. ``end`` is omitted only when the
database had no further event in that direction (spec: "If no further
events are available ... this property is omitted").

A departed user's reads stop at their leave (RoomAccess.clamp).

Going backwards past the oldest event we hold, the room's older history is
fetched from another server first when federation is on (``backfill``, a
federation_backfill.BackfillHandler set by the composition root); ``end``
is then kept so the client asks again for what lies further back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from atrium.errors import NotFound
from atrium.events.event import Event
from atrium.events.serialize import serialize_events
from atrium.handlers.pagination_token import PaginationToken, format_position
from atrium.handlers.room_access import RoomAccess, RoomAccessChecker
from atrium.handlers.room_event_filter import EMPTY_FILTER, RoomEventFilter
from atrium.handlers.visibility import filter_events_for_client
from atrium.storage.stores import Stores
from atrium.storage.stores.pagination import BEFORE_ALL, PaginationStore, RoomPosition
from atrium.sync.token import StreamToken
from atrium.util.clock import Clock

MEMBER = "m.room.member"
# Rounds of reading to fill one page when filters or visibility hide events.
MAX_ROUNDS = 3
# Backfill requests one /messages request may make before answering.
MAX_BACKFILLS = 2
MAX_LIMIT = 1000
DEFAULT_LIMIT = 10


@attrs.frozen(slots=True)
class Page:
    """Visible events in pagination order, where to continue, and whether the room ran out."""

    events: list[Event]
    next_position: RoomPosition
    exhausted: bool


class PaginationHandler:
    def __init__(
        self,
        *,
        stores: Stores,
        pagination: PaginationStore,
        access: RoomAccessChecker,
        clock: Clock,
    ) -> None:
        self.stores = stores
        self.pagination = pagination
        self.access = access
        self.clock = clock
        # BackfillHandler when federation is on (set by the composition root).
        self.backfill: Any = None

    async def resolve_token(self, room_id: str, token: PaginationToken) -> RoomPosition:
        """A topological position in this room for a pagination or stream token."""
        if isinstance(token, StreamToken):
            return await self.pagination.get_position_for_stream_token(room_id, token.events)
        return token

    async def read_page(
        self,
        user_id: str,
        room_id: str,
        *,
        start: RoomPosition,
        bound: RoomPosition | None,
        backwards: bool,
        limit: int,
        event_filter: RoomEventFilter,
    ) -> Page:
        """Up to ``limit`` visible events from ``start`` towards ``bound`` (exclusive
        lower bound going backwards, inclusive upper bound going forwards)."""
        events: list[Event] = []
        position = start
        if not event_filter.allows_room(room_id):
            return Page(events, position, True)
        sql_filter = event_filter.sql_filter()
        for _ in range(MAX_ROUNDS):
            want = limit - len(events)
            if want <= 0:
                break
            after, upto = (bound, position) if backwards else (position, bound)
            rows = await self.pagination.paginate(
                room_id,
                after=after,
                upto=upto,
                backwards=backwards,
                limit=want + 1,
                event_filter=sql_filter,
            )
            more = len(rows) > want
            rows = rows[:want]
            if rows:
                last = rows[-1].position
                position = last.just_before() if backwards else last
                loaded = await self.stores.events.get_events_as_list([r.event_id for r in rows])
                shown = await filter_events_for_client(
                    self.stores, user_id, event_filter.filter(loaded)
                )
                events.extend(shown)
            if not more:
                return Page(events, position, True)
        return Page(events, position, False)

    async def get_messages(
        self,
        user_id: str,
        device_id: str | None,
        room_id: str,
        *,
        from_token: PaginationToken | None,
        from_text: str | None,
        to_token: PaginationToken | None,
        backwards: bool,
        limit: int | None,
        event_filter: RoomEventFilter = EMPTY_FILTER,
    ) -> dict[str, Any]:
        """The body of a /messages response."""
        access = await self.access.check_can_read(user_id, room_id)
        if limit is None:
            limit = event_filter.limit if event_filter.limit is not None else DEFAULT_LIMIT
        limit = min(limit, MAX_LIMIT)
        clamp = access.clamp

        if from_token is not None:
            start = await self.resolve_token(room_id, from_token)
        elif backwards:
            last = await self.pagination.get_last_timeline_event(room_id, clamp)
            start = last.position if last is not None else BEFORE_ALL
        else:
            start = BEFORE_ALL
        bound = await self.resolve_token(room_id, to_token) if to_token is not None else None
        if clamp is not None:
            if backwards:
                start = min(start, clamp)
            else:
                bound = clamp if bound is None else min(bound, clamp)

        async def read() -> Page:
            return await self.read_page(
                user_id,
                room_id,
                start=start,
                bound=bound,
                backwards=backwards,
                limit=limit,
                event_filter=event_filter,
            )

        page = await read()
        if backwards and page.exhausted and self.backfill is not None:
            more_remote = False
            if len(page.events) >= limit:
                # A full page: fetch older history when the client asks for it.
                more_remote = await self.backfill.has_backward_extremities(room_id)
            else:
                for _ in range(MAX_BACKFILLS):
                    more_remote = await self.backfill.maybe_backfill(room_id, limit)
                    if not more_remote:
                        break
                    page = await read()
                    if not page.exhausted:
                        break
            if more_remote and page.exhausted:
                # More may lie behind what we hold: let the client ask again.
                page = Page(page.events, page.next_position, False)
        now = self.clock.time_msec()
        result: dict[str, Any] = {
            "chunk": serialize_events(
                page.events, now, requester_user_id=user_id, requester_device_id=device_id
            ),
            "start": from_text if from_text is not None else format_position(start),
        }
        if not page.exhausted:
            result["end"] = format_position(page.next_position)
        if event_filter.lazy_load_members and page.events:
            newest = page.events[0] if backwards else page.events[-1]
            members = await self._member_state(newest, page.events)
            result["state"] = serialize_events(members, now)
        return result

    async def get_context(
        self,
        user_id: str,
        device_id: str | None,
        room_id: str,
        event_id: str,
        *,
        limit: int,
        event_filter: RoomEventFilter = EMPTY_FILTER,
    ) -> dict[str, Any]:
        """The body of a /context response; 404 when the event is not visible."""
        access = await self.access.check_can_read(user_id, room_id)
        event, position = await self.get_visible_event(user_id, room_id, event_id, access)
        limit = min(limit, MAX_LIMIT)
        before_limit = limit // 2
        before = await self.read_page(
            user_id,
            room_id,
            start=position.just_before(),
            bound=None,
            backwards=True,
            limit=before_limit,
            event_filter=event_filter,
        )
        after = await self.read_page(
            user_id,
            room_id,
            start=position,
            bound=access.clamp,
            backwards=False,
            limit=limit - before_limit,
            event_filter=event_filter,
        )
        newest = after.events[-1] if after.events else event
        everything = [*before.events, event, *after.events]
        if event_filter.lazy_load_members:
            state = await self._member_state(newest, everything)
        else:
            state_ids = await self.stores.state.get_state_ids_for_event(newest.event_id) or {}
            state = await self.stores.events.get_events_as_list(list(state_ids.values()))
        now = self.clock.time_msec()
        kwargs = {"requester_user_id": user_id, "requester_device_id": device_id}
        return {
            "event": serialize_events([event], now, **kwargs)[0],
            "events_before": serialize_events(before.events, now, **kwargs),
            "events_after": serialize_events(after.events, now, **kwargs),
            "start": format_position(before.next_position),
            "end": format_position(after.next_position),
            "state": serialize_events(state, now),
        }

    async def get_visible_event(
        self, user_id: str, room_id: str, event_id: str, access: RoomAccess
    ) -> tuple[Event, RoomPosition]:
        """A timeline event of this room the user may see, with its position (else 404)."""
        found = (await self.pagination.get_event_positions([event_id])).get(event_id)
        if found is None or found[0] != room_id:
            raise NotFound("Event not found")
        position = found[1]
        if access.clamp is not None and position > access.clamp:
            raise NotFound("Event not found")
        event = await self.stores.events.get_event(event_id, allow_none=True)
        if event is None or not await filter_events_for_client(self.stores, user_id, [event]):
            raise NotFound("Event not found")
        return event, position

    async def _member_state(self, at: Event, events: Sequence[Event]) -> list[Event]:
        """Lazy-loaded members: the member events of the senders, as of ``at``.

        ``at`` is the newest event shown, so every sender has a membership
        there (spec "Lazy-loading room members").
        """
        senders = sorted({e.sender for e in events})
        state = await self.stores.state.get_state_ids_for_event(
            at.event_id, [(MEMBER, s) for s in senders]
        )
        if not state:
            return []
        return await self.stores.events.get_events_as_list(list(state.values()))
