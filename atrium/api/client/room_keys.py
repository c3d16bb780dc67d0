"""Server-side key backups: /room_keys/version and /room_keys/keys.

Spec: client-server API "Server-side key backups" (key_backup.yaml); the
logic is in ``atrium.handlers.room_keys``.

Route groups: these endpoints touch no stream and no in-process id
generator (versions are numbered by the database, the replacement rule is
one upsert), so any process may serve them: reads are "client_read",
writes "client_write" (see atrium/app/routes.py).
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.errors import BadJson, MissingParam
from atrium.handlers.room_keys import parse_key_data, parse_room_backup
from atrium.http.request import parse_json_object, query_string
from atrium.http.server import Router, client_paths


def register_servlets(hs: Any, router: Router) -> None:
    config = hs.config
    auth = hs.auth

    def body_of(request: Request) -> dict[str, Any]:
        return parse_json_object(request, config.max_request_size)

    def version_of(request: Request) -> str:
        version = query_string(request, "version", required=True)
        assert version is not None
        return version

    # -- versions ------------------------------------------------------------------------
    async def create_version(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        return 200, await hs.room_keys.create_version(requester.user_id, body_of(request))

    async def current_version(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        return 200, await hs.room_keys.get_version(requester.user_id, None)

    async def get_version(request: Request, version: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        return 200, await hs.room_keys.get_version(requester.user_id, version)

    async def update_version(request: Request, version: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        body = body_of(request)
        return 200, await hs.room_keys.update_version(requester.user_id, version, body)

    async def delete_version(request: Request, version: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        return 200, await hs.room_keys.delete_version(requester.user_id, version)

    # -- keys: the whole backup, one room, one session -------------------------------------
    async def put_all(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        version = version_of(request)
        body = body_of(request)
        rooms = body.get("rooms")
        if rooms is None:
            raise MissingParam("Missing 'rooms'")
        if not isinstance(rooms, dict):
            raise BadJson("'rooms' must be an object")
        keys = [key for room_id, data in rooms.items() for key in parse_room_backup(room_id, data)]
        return 200, await hs.room_keys.put_keys(requester.user_id, version, keys)

    async def put_room(request: Request, room_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        version = version_of(request)
        keys = parse_room_backup(room_id, body_of(request))
        return 200, await hs.room_keys.put_keys(requester.user_id, version, keys)

    async def put_session(request: Request, room_id: str, session_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        version = version_of(request)
        key = parse_key_data(room_id, session_id, body_of(request))
        return 200, await hs.room_keys.put_keys(requester.user_id, version, [key])

    async def get_all(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        return 200, await hs.room_keys.get_keys(requester.user_id, version_of(request))

    async def get_room(request: Request, room_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        return 200, await hs.room_keys.get_keys(requester.user_id, version_of(request), room_id)

    async def get_session(request: Request, room_id: str, session_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        version = version_of(request)
        return 200, await hs.room_keys.get_keys(requester.user_id, version, room_id, session_id)

    async def delete_all(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        return 200, await hs.room_keys.delete_keys(requester.user_id, version_of(request))

    async def delete_room(request: Request, room_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        version = version_of(request)
        return 200, await hs.room_keys.delete_keys(requester.user_id, version, room_id)

    async def delete_session(request: Request, room_id: str, session_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        version = version_of(request)
        return 200, await hs.room_keys.delete_keys(requester.user_id, version, room_id, session_id)

    for method, path, servlet, group in (
        ("POST", "/room_keys/version", create_version, "client_write"),
        ("GET", "/room_keys/version", current_version, "client_read"),
        ("GET", "/room_keys/version/{version}", get_version, "client_read"),
        ("PUT", "/room_keys/version/{version}", update_version, "client_write"),
        ("DELETE", "/room_keys/version/{version}", delete_version, "client_write"),
        ("PUT", "/room_keys/keys", put_all, "client_write"),
        ("GET", "/room_keys/keys", get_all, "client_read"),
        ("DELETE", "/room_keys/keys", delete_all, "client_write"),
        ("PUT", "/room_keys/keys/{room_id}", put_room, "client_write"),
        ("GET", "/room_keys/keys/{room_id}", get_room, "client_read"),
        ("DELETE", "/room_keys/keys/{room_id}", delete_room, "client_write"),
        ("PUT", "/room_keys/keys/{room_id}/{session_id}", put_session, "client_write"),
        ("GET", "/room_keys/keys/{room_id}/{session_id}", get_session, "client_read"),
        ("DELETE", "/room_keys/keys/{room_id}/{session_id}", delete_session, "client_write"),
    ):
        router.register(method, client_paths(path), servlet, group=group)
