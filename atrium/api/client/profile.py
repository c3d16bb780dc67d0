"""Profiles (spec: client-server API "Profiles").

Reading a profile needs no access token (the spec's GET endpoints have no
security requirement), but a token that is sent must be valid.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.http.request import parse_json_object
from atrium.http.server import Router, client_paths


def register_servlets(hs: Any, router: Router) -> None:
    config = hs.config
    auth = hs.auth
    handler = hs.profile

    async def get_profile(request: Request, user_id: str) -> tuple[int, Any]:
        await auth.get_requester(request, allow_missing=True)
        return 200, await handler.get_profile(user_id)

    async def get_field(request: Request, user_id: str, field: str) -> tuple[int, Any]:
        await auth.get_requester(request, allow_missing=True)
        return 200, await handler.get_field(user_id, field)

    async def put_field(request: Request, user_id: str, field: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        body = parse_json_object(request, config.max_request_size)
        await handler.set_field(requester.user_id, requester.is_admin, user_id, field, body)
        return 200, {}

    async def delete_field(request: Request, user_id: str, field: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        await handler.delete_field(requester.user_id, requester.is_admin, user_id, field)
        return 200, {}

    router.register("GET", client_paths("/profile/{user_id}"), get_profile, "client_read")
    field = client_paths("/profile/{user_id}/{field}")
    router.register("GET", field, get_field, "client_read")
    router.register("PUT", field, put_field, "client_master")
    router.register("DELETE", field, delete_field, "client_master")
