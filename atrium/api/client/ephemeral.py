"""Typing, receipts and read markers (spec: client-server API "Typing
Notifications", "Receipts", "Read and unread markers")."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.errors import BadJson, InvalidParam
from atrium.handlers.account_data import check_room_id
from atrium.handlers.typing import DEFAULT_TYPING_TIMEOUT_MS
from atrium.http.request import parse_json_object
from atrium.http.server import Router, client_paths


def register_servlets(hs: Any, router: Router) -> None:
    config = hs.config
    auth = hs.auth

    async def set_typing(request: Request, room_id: str, user_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        check_room_id(room_id)
        body = parse_json_object(request, config.max_request_size)
        typing = body.get("typing")
        if not isinstance(typing, bool):
            raise BadJson("'typing' must be a boolean")
        timeout = body.get("timeout", DEFAULT_TYPING_TIMEOUT_MS)
        if typing and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0):
            raise BadJson("'timeout' must be a non-negative integer (milliseconds)")
        await hs.typing.set_typing(
            requester.user_id, user_id, room_id, typing, timeout if typing else 0
        )
        return 200, {}

    async def post_receipt(
        request: Request, room_id: str, receipt_type: str, event_id: str
    ) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        check_room_id(room_id)
        if not event_id.startswith("$"):
            raise InvalidParam(f"{event_id!r} is not an event ID")
        # The body is required by the spec but older clients send none.
        body = parse_json_object(request, config.max_request_size, allow_empty=True)
        await hs.receipts.client_receipt(requester.user_id, room_id, receipt_type, event_id, body)
        return 200, {}

    async def read_markers(request: Request, room_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        check_room_id(room_id)
        body = parse_json_object(request, config.max_request_size)
        await hs.receipts.client_read_markers(requester.user_id, room_id, body)
        return 200, {}

    # Typing, receipts and read markers write streams only the master writes.
    group = "client_master"
    router.register("PUT", client_paths("/rooms/{room_id}/typing/{user_id}"), set_typing, group)
    router.register(
        "POST",
        client_paths("/rooms/{room_id}/receipt/{receipt_type}/{event_id}"),
        post_receipt,
        group,
    )
    router.register("POST", client_paths("/rooms/{room_id}/read_markers"), read_markers, group)
