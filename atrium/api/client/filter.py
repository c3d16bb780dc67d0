"""User filters: POST /user/{userId}/filter and GET /user/{userId}/filter/{filterId}.

Spec: client-server API "Filtering". A user may only create and read their
own filters (M_FORBIDDEN otherwise); a filter that does not match the spec's
schema is refused with M_BAD_JSON.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.errors import BadJson, Forbidden, NotFound
from atrium.http.request import parse_json_object
from atrium.http.server import Router, client_paths
from atrium.sync.filtering import FilterError, validate_filter_json


def register_servlets(hs: Any, router: Router) -> None:
    auth = hs.auth
    store = hs.filters
    max_size = hs.config.max_request_size

    async def create_filter(request: Request, user_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        if requester.user_id != user_id:
            raise Forbidden("You can only create filters for yourself")
        body = parse_json_object(request, max_size)
        try:
            validate_filter_json(body)
        except FilterError as e:
            raise BadJson(str(e)) from None
        filter_id = await store.add_user_filter(user_id, body)
        return 200, {"filter_id": str(filter_id)}

    async def get_filter(request: Request, user_id: str, filter_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        if requester.user_id != user_id:
            raise Forbidden("You can only read your own filters")
        if not filter_id.isdigit() or len(filter_id) > 18:
            raise NotFound("No such filter")
        filter_json = await store.get_user_filter(user_id, int(filter_id))
        if filter_json is None:
            raise NotFound("No such filter")
        return 200, filter_json

    router.register("POST", client_paths("/user/{user_id}/filter"), create_filter, "client_master")
    router.register(
        "GET", client_paths("/user/{user_id}/filter/{filter_id}"), get_filter, "client_read"
    )
