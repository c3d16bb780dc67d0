"""Room reads: /messages, /context, /event, /members, /joined_members,
/state, /state/{type}/{key}, /joined_rooms, /timestamp_to_event.

Spec: client-server API "Getting events for a room" and "Room history"
(message_pagination.yaml, rooms.yaml, joined_rooms.yaml,
room_event_by_timestamp.yaml). All are "client_read" routes.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.errors import InvalidParam
from atrium.events.serialize import serialize_event, serialize_events
from atrium.events.validation import has_room_id_shape
from atrium.handlers.pagination import MAX_LIMIT
from atrium.handlers.pagination_token import in_int64, parse_pagination_token
from atrium.handlers.room_event_filter import parse_room_event_filter
from atrium.handlers.room_read import MEMBERSHIPS
from atrium.http.request import query_int, query_string
from atrium.http.server import Router, client_paths


def check_no_nul(*values: str) -> None:
    """Refuse NUL characters in identifiers: PostgreSQL cannot store or compare them."""
    if any("\x00" in v for v in values):
        raise InvalidParam("Identifiers may not contain NUL characters")


def check_room_id(room_id: str) -> None:
    check_no_nul(room_id)
    if not has_room_id_shape(room_id):
        raise InvalidParam(f"{room_id[:300]!r} is not a room ID")


def check_event_id(event_id: str) -> None:
    check_no_nul(event_id)
    if not event_id.startswith("$"):
        raise InvalidParam(f"{event_id[:300]!r} is not an event ID")


def register_servlets(hs: Any, router: Router) -> None:
    auth = hs.auth
    pagination = hs.pagination
    reads = hs.room_reads
    clock = hs.clock

    async def messages(request: Request, room_id: str) -> tuple[int, Any]:
        check_room_id(room_id)
        requester = await auth.get_requester(request)
        direction = query_string(request, "dir", required=True, allowed=("b", "f"))
        from_text = query_string(request, "from")
        to_text = query_string(request, "to")
        limit = query_int(request, "limit", minimum=0, maximum=MAX_LIMIT)
        event_filter = parse_room_event_filter(query_string(request, "filter"))
        body = await pagination.get_messages(
            requester.user_id,
            requester.device_id,
            room_id,
            from_token=parse_pagination_token(from_text, "from") if from_text else None,
            from_text=from_text or None,
            to_token=parse_pagination_token(to_text, "to") if to_text else None,
            backwards=direction == "b",
            limit=limit,
            event_filter=event_filter,
        )
        return 200, body

    async def context(request: Request, room_id: str, event_id: str) -> tuple[int, Any]:
        check_room_id(room_id)
        check_event_id(event_id)
        requester = await auth.get_requester(request)
        limit = query_int(request, "limit", default=10, minimum=0, maximum=MAX_LIMIT)
        assert limit is not None
        event_filter = parse_room_event_filter(query_string(request, "filter"))
        body = await pagination.get_context(
            requester.user_id,
            requester.device_id,
            room_id,
            event_id,
            limit=limit,
            event_filter=event_filter,
        )
        return 200, body

    async def get_event(request: Request, room_id: str, event_id: str) -> tuple[int, Any]:
        check_room_id(room_id)
        check_event_id(event_id)
        requester = await auth.get_requester(request)
        event = await reads.get_event(requester.user_id, room_id, event_id)
        return 200, serialize_event(
            event,
            clock.time_msec(),
            requester_user_id=requester.user_id,
            requester_device_id=requester.device_id,
        )

    async def members(request: Request, room_id: str) -> tuple[int, Any]:
        check_room_id(room_id)
        requester = await auth.get_requester(request)
        at_text = query_string(request, "at")
        membership = query_string(request, "membership", allowed=MEMBERSHIPS)
        not_membership = query_string(request, "not_membership", allowed=MEMBERSHIPS)
        events = await reads.get_members(
            requester.user_id,
            room_id,
            at=parse_pagination_token(at_text, "at") if at_text else None,
            membership=membership,
            not_membership=not_membership,
        )
        return 200, {"chunk": serialize_events(events, clock.time_msec())}

    async def joined_members(request: Request, room_id: str) -> tuple[int, Any]:
        check_room_id(room_id)
        requester = await auth.get_requester(request)
        joined = await reads.get_joined_members(requester.user_id, room_id)
        return 200, {"joined": joined}

    async def state(request: Request, room_id: str) -> tuple[int, Any]:
        check_room_id(room_id)
        requester = await auth.get_requester(request)
        events = await reads.get_state(requester.user_id, room_id)
        return 200, serialize_events(events, clock.time_msec())

    async def state_event(
        request: Request, room_id: str, event_type: str, state_key: str = ""
    ) -> tuple[int, Any]:
        check_room_id(room_id)
        check_no_nul(event_type, state_key)
        requester = await auth.get_requester(request)
        # Spec v1.16: ?format=event returns the whole client event.
        fmt = query_string(request, "format", default="content", allowed=("content", "event"))
        event = await reads.get_state_event(requester.user_id, room_id, event_type, state_key)
        if fmt == "event":
            return 200, serialize_event(event, clock.time_msec())
        return 200, event.content

    async def state_event_empty_key(
        request: Request, room_id: str, event_type: str
    ) -> tuple[int, Any]:
        return await state_event(request, room_id, event_type, "")

    async def joined_rooms(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        rooms = await reads.get_joined_rooms(requester.user_id)
        return 200, {"joined_rooms": sorted(rooms)}

    async def timestamp_to_event(request: Request, room_id: str) -> tuple[int, Any]:
        check_room_id(room_id)
        requester = await auth.get_requester(request)
        query_string(request, "ts", required=True)
        ts = query_int(request, "ts")
        if ts is None or not in_int64(ts):
            raise InvalidParam("'ts' must be a 64-bit integer")
        direction = query_string(request, "dir", required=True, allowed=("b", "f"))
        body = await reads.timestamp_to_event(requester.user_id, room_id, ts, direction == "b")
        return 200, body

    group = "client_read"
    rooms = "/rooms/{room_id}"
    router.register("GET", client_paths(f"{rooms}/messages"), messages, group)
    router.register("GET", client_paths(f"{rooms}/context/{{event_id}}"), context, group)
    router.register("GET", client_paths(f"{rooms}/event/{{event_id}}"), get_event, group)
    router.register("GET", client_paths(f"{rooms}/members"), members, group)
    router.register("GET", client_paths(f"{rooms}/joined_members"), joined_members, group)
    router.register("GET", client_paths(f"{rooms}/state"), state, group)
    router.register(
        "GET", client_paths(f"{rooms}/state/{{event_type}}/{{state_key}}"), state_event, group
    )
    # "When an empty string, the trailing slash on this endpoint is optional."
    for path in (f"{rooms}/state/{{event_type}}", f"{rooms}/state/{{event_type}}/"):
        router.register("GET", client_paths(path), state_event_empty_key, group)
    router.register("GET", client_paths("/joined_rooms"), joined_rooms, group)
    router.register(
        "GET",
        client_paths(f"{rooms}/timestamp_to_event", ("/_matrix/client/v1",)),
        timestamp_to_event,
        group,
    )
