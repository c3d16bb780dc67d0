"""The admin API (server admins only): ``/_atrium/admin/v1/...``.

GET  /_atrium/admin/v1/server_version
GET  /_atrium/admin/v1/users?from=N&limit=N
GET  /_atrium/admin/v1/users/{user_id}
POST /_atrium/admin/v1/users/{user_id}/deactivate
GET  /_atrium/admin/v1/rooms?from=N&limit=N
GET  /_atrium/admin/v1/rooms/{room_id}
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.errors import BadJson
from atrium.http.request import query_int
from atrium.http.server import Router

PREFIX = "/_atrium/admin/v1"


def register_servlets(hs: Any, router: Router) -> None:
    auth = hs.auth
    admin = hs.admin

    def check_user_id(user_id: str) -> None:
        if not user_id.startswith("@") or ":" not in user_id:
            raise BadJson(f"{user_id!r} is not a user ID")

    async def server_version(request: Request) -> tuple[int, Any]:
        await auth.require_admin(request)
        return 200, admin.server_version()

    async def list_users(request: Request) -> tuple[int, Any]:
        await auth.require_admin(request)
        offset = query_int(request, "from", 0, minimum=0)
        limit = query_int(request, "limit", 100, minimum=1, maximum=1000)
        return 200, await admin.list_users(offset, limit)

    async def get_user(request: Request, user_id: str) -> tuple[int, Any]:
        await auth.require_admin(request)
        check_user_id(user_id)
        return 200, await admin.get_user(user_id)

    async def deactivate(request: Request, user_id: str) -> tuple[int, Any]:
        requester = await auth.require_admin(request)
        check_user_id(user_id)
        return 200, await admin.deactivate_user(user_id, requester.user_id)

    async def list_rooms(request: Request) -> tuple[int, Any]:
        await auth.require_admin(request)
        offset = query_int(request, "from", 0, minimum=0)
        limit = query_int(request, "limit", 100, minimum=1, maximum=1000)
        return 200, await admin.list_rooms(offset, limit)

    async def room_details(request: Request, room_id: str) -> tuple[int, Any]:
        await auth.require_admin(request)
        if not room_id.startswith("!"):
            raise BadJson(f"{room_id!r} is not a room ID")
        return 200, await admin.room_details(room_id)

    router.register("GET", f"{PREFIX}/server_version", server_version, "admin")
    router.register("GET", f"{PREFIX}/users", list_users, "admin")
    router.register("GET", f"{PREFIX}/users/{{user_id}}", get_user, "admin")
    router.register("POST", f"{PREFIX}/users/{{user_id}}/deactivate", deactivate, "admin")
    router.register("GET", f"{PREFIX}/rooms", list_rooms, "admin")
    router.register("GET", f"{PREFIX}/rooms/{{room_id}}", room_details, "admin")
