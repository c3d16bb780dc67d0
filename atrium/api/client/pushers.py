"""Pushers (GET /pushers, POST /pushers/set) and GET /notifications.

Spec: client-server API "Push notifications" (pusher.yaml,
notifications.yaml). Pushers: ``PushersHandler``; notifications come from
the push actions stored with each event (``NotificationsHandler``).
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.http.request import parse_json_object, query_int, query_string
from atrium.http.server import Router, client_paths


def register_servlets(hs: Any, router: Router) -> None:
    auth = hs.auth

    async def get_pushers(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        return 200, await hs.pushers.get_pushers(requester.user_id)

    async def set_pusher(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        body = parse_json_object(request, hs.config.max_request_size)
        return 200, await hs.pushers.set_pusher(requester.user_id, body)

    async def notifications(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        return 200, await hs.notifications.get_notifications(
            requester.user_id,
            query_string(request, "from"),
            query_int(request, "limit", default=20, minimum=0) or 20,
            query_string(request, "only"),
        )

    router.register("GET", client_paths("/pushers"), get_pushers, group="client_read")
    # A table no stream follows: any process may write it (atrium/app/routes.py).
    router.register("POST", client_paths("/pushers/set"), set_pusher, group="client_write")
    router.register("GET", client_paths("/notifications"), notifications, group="client_read")
