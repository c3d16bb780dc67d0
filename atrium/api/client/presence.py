"""Presence status (spec: client-server API "Presence")."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.http.request import parse_json_object
from atrium.http.server import Router, client_paths


def register_servlets(hs: Any, router: Router) -> None:
    config = hs.config
    auth = hs.auth

    async def get_status(request: Request, user_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        return 200, await hs.presence.get_state(requester.user_id, user_id)

    async def put_status(request: Request, user_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        body = parse_json_object(request, config.max_request_size)
        await hs.presence.set_state(requester.user_id, user_id, body)
        return 200, {}

    path = client_paths("/presence/{user_id}/status")
    router.register("GET", path, get_status, "client_read")
    router.register("PUT", path, put_status, "client_master")
