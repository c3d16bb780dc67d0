"""Account data, global and per room, and room tags (spec: client-server
API "Client Config" and "Room Tagging")."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.http.request import parse_json_object
from atrium.http.server import Router, client_paths


def register_servlets(hs: Any, router: Router) -> None:
    config = hs.config
    auth = hs.auth
    handler = hs.account_data

    def body_of(request: Request) -> dict[str, Any]:
        return parse_json_object(request, config.max_request_size)

    async def put_global(request: Request, user_id: str, data_type: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        body = body_of(request)
        await handler.client_set(requester.user_id, user_id, None, data_type, body)
        return 200, {}

    async def get_global(request: Request, user_id: str, data_type: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        return 200, dict(await handler.client_get(requester.user_id, user_id, None, data_type))

    async def put_room(
        request: Request, user_id: str, room_id: str, data_type: str
    ) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        body = body_of(request)
        await handler.client_set(requester.user_id, user_id, room_id, data_type, body)
        return 200, {}

    async def get_room(
        request: Request, user_id: str, room_id: str, data_type: str
    ) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        return 200, dict(await handler.client_get(requester.user_id, user_id, room_id, data_type))

    async def get_tags(request: Request, user_id: str, room_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        return 200, await handler.get_tags(requester.user_id, user_id, room_id)

    async def put_tag(request: Request, user_id: str, room_id: str, tag: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        body = body_of(request)
        await handler.add_tag(requester.user_id, user_id, room_id, tag, body)
        return 200, {}

    async def delete_tag(request: Request, user_id: str, room_id: str, tag: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        await handler.remove_tag(requester.user_id, user_id, room_id, tag)
        return 200, {}

    # The account_data stream is written by the master.
    write, read = "client_master", "client_read"
    user = "/user/{user_id}"
    router.register("PUT", client_paths(user + "/account_data/{data_type}"), put_global, write)
    router.register("GET", client_paths(user + "/account_data/{data_type}"), get_global, read)
    room_data = user + "/rooms/{room_id}/account_data/{data_type}"
    router.register("PUT", client_paths(room_data), put_room, write)
    router.register("GET", client_paths(room_data), get_room, read)
    router.register("GET", client_paths(user + "/rooms/{room_id}/tags"), get_tags, read)
    router.register("PUT", client_paths(user + "/rooms/{room_id}/tags/{tag}"), put_tag, write)
    router.register("DELETE", client_paths(user + "/rooms/{room_id}/tags/{tag}"), delete_tag, write)
