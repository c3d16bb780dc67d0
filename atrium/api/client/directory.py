"""The room directory: /directory/room/{roomAlias}, /rooms/{roomId}/aliases,
/directory/list/room/{roomId}, /publicRooms.

Spec: client-server API "Room aliases" and "Room discovery"
(directory.yaml, list_public_rooms.yaml). Reads are "client_read", changes
"client_write". Resolving an alias, reading a room's directory visibility
and GET /publicRooms need no access token (the spec gives them no security
requirement).
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.errors import BadJson, InvalidParam
from atrium.http.request import parse_json_object, query_int, query_string
from atrium.http.server import Router, client_paths

MAX_PUBLIC_ROOMS_LIMIT = 1000


def register_servlets(hs: Any, router: Router) -> None:
    auth = hs.auth
    directory = hs.directory_handler
    max_size = hs.config.max_request_size

    def check_server(server: str | None) -> None:
        if server is not None and server != hs.server_name:
            raise InvalidParam("Listing the room directory of other servers is not supported")

    async def put_alias(request: Request, room_alias: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        body = parse_json_object(request, max_size)
        room_id = body.get("room_id")
        if not isinstance(room_id, str):
            raise BadJson("'room_id' must be a room ID")
        await directory.create_alias(requester, room_alias, room_id)
        return 200, {}

    async def get_alias(request: Request, room_alias: str) -> tuple[int, Any]:
        return 200, await directory.get_alias(room_alias)

    async def delete_alias(request: Request, room_alias: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        await directory.delete_alias(requester, room_alias)
        return 200, {}

    async def room_aliases(request: Request, room_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        aliases = await directory.get_aliases_for_room(requester.user_id, room_id)
        return 200, {"aliases": aliases}

    async def get_visibility(request: Request, room_id: str) -> tuple[int, Any]:
        return 200, {"visibility": await directory.get_visibility(room_id)}

    async def put_visibility(request: Request, room_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        body = parse_json_object(request, max_size, allow_empty=True)
        # "visibility" defaults to public when absent (list_public_rooms.yaml).
        await directory.set_visibility(requester, room_id, body.get("visibility", "public"))
        return 200, {}

    async def get_public_rooms(request: Request) -> tuple[int, Any]:
        check_server(query_string(request, "server"))
        limit = query_int(request, "limit", minimum=1, maximum=MAX_PUBLIC_ROOMS_LIMIT)
        since = query_string(request, "since")
        return 200, await directory.get_public_rooms(limit=limit, since=since or None)

    async def post_public_rooms(request: Request) -> tuple[int, Any]:
        await auth.get_requester(request)
        check_server(query_string(request, "server"))
        body = parse_json_object(request, max_size, allow_empty=True)
        limit = body.get("limit")
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise BadJson("'limit' must be a positive integer")
            limit = min(limit, MAX_PUBLIC_ROOMS_LIMIT)
        since = body.get("since")
        if since is not None and not isinstance(since, str):
            raise BadJson("'since' must be a string")
        search_term, room_types = _parse_room_filter(body.get("filter"))
        result = await directory.get_public_rooms(
            limit=limit, since=since or None, search_term=search_term, room_types=room_types
        )
        return 200, result

    read, write = "client_read", "client_write"
    alias_path = client_paths("/directory/room/{room_alias}")
    router.register("PUT", alias_path, put_alias, write)
    router.register("GET", alias_path, get_alias, read)
    router.register("DELETE", alias_path, delete_alias, write)
    router.register("GET", client_paths("/rooms/{room_id}/aliases"), room_aliases, read)
    list_path = client_paths("/directory/list/room/{room_id}")
    router.register("GET", list_path, get_visibility, read)
    router.register("PUT", list_path, put_visibility, write)
    router.register("GET", client_paths("/publicRooms"), get_public_rooms, read)
    router.register("POST", client_paths("/publicRooms"), post_public_rooms, read)


def _parse_room_filter(value: Any) -> tuple[str | None, list[str | None] | None]:
    """(generic_search_term, room_types) of a POST /publicRooms filter."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise BadJson("'filter' must be an object")
    term = value.get("generic_search_term")
    if term is not None and not isinstance(term, str):
        raise BadJson("'generic_search_term' must be a string")
    room_types = value.get("room_types")
    if room_types is not None and (
        not isinstance(room_types, list)
        or not all(t is None or isinstance(t, str) for t in room_types)
    ):
        raise BadJson("'room_types' must be a list of strings or nulls")
    return term or None, room_types
