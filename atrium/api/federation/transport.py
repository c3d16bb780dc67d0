"""Federation endpoints (route group "federation"), all X-Matrix signed
except ``/version``.

- ``PUT /send/{txnId}``: inbound transactions (handlers/federation_transaction.py);
- ``/event``, ``/state``, ``/state_ids``, ``/event_auth``, ``/backfill``,
  ``/get_missing_events``: reads (handlers/federation_read.py);
- ``/query/profile``, ``/query/directory``, ``/user/devices``,
  ``/user/keys/query``, ``/user/keys/claim``: queries
  (handlers/federation_query.py);
- ``/make_join``, ``/make_leave``, ``/make_knock``, ``/send_knock`` (v1),
  ``/send_join``, ``/send_leave``, ``/invite`` (v2): membership (handlers/federation_membership.py).
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

import atrium
from atrium.api.client.room_read import check_no_nul
from atrium.api.federation.signed import FEDERATION_V1, FEDERATION_V2, signed
from atrium.errors import BadJson, MissingParam
from atrium.http.request import query_int, query_string, query_strings
from atrium.http.server import Router


def _object(content: Any) -> dict[str, Any]:
    if not isinstance(content, dict):
        raise BadJson("Content must be a JSON object")
    return content


def register_servlets(hs: Any, router: Router) -> None:
    fed = hs.federation

    def route(method: str, path: str, servlet: Any, prefix: str = FEDERATION_V1) -> None:
        router.register(method, prefix + path, signed(hs, servlet), "federation")

    # -- transactions ----------------------------------------------------------------------
    async def send_transaction(
        request: Request,
        origin: str,
        content: Any,
        txnId: str,  # noqa: N803
    ) -> tuple[int, Any]:
        body = _object(content)
        if body.get("origin", origin) != origin:
            raise BadJson("Transaction 'origin' does not match the signing server")
        return 200, await fed.transactions.on_transaction(origin, txnId, body)

    # -- reads ---------------------------------------------------------------------------------
    async def get_event(
        request: Request,
        origin: str,
        content: Any,
        eventId: str,  # noqa: N803
    ) -> tuple[int, Any]:
        return 200, await fed.reads.get_event(origin, eventId)

    async def get_state(
        request: Request,
        origin: str,
        content: Any,
        roomId: str,  # noqa: N803
    ) -> tuple[int, Any]:
        event_id = query_string(request, "event_id", required=True)
        assert event_id is not None
        return 200, await fed.reads.get_state(origin, roomId, event_id)

    async def get_state_ids(
        request: Request,
        origin: str,
        content: Any,
        roomId: str,  # noqa: N803
    ) -> tuple[int, Any]:
        event_id = query_string(request, "event_id", required=True)
        assert event_id is not None
        return 200, await fed.reads.get_state_ids(origin, roomId, event_id)

    async def get_event_auth(
        request: Request,
        origin: str,
        content: Any,
        roomId: str,
        eventId: str,  # noqa: N803
    ) -> tuple[int, Any]:
        return 200, await fed.reads.get_event_auth(origin, roomId, eventId)

    async def backfill(
        request: Request,
        origin: str,
        content: Any,
        roomId: str,  # noqa: N803
    ) -> tuple[int, Any]:
        from_ids = query_strings(request, "v")
        if not from_ids:
            raise MissingParam("Missing query parameter 'v'")
        limit = query_int(request, "limit", minimum=0)
        if limit is None:
            raise MissingParam("Missing query parameter 'limit'")
        return 200, await fed.reads.backfill(origin, roomId, from_ids, limit)

    async def get_missing_events(
        request: Request,
        origin: str,
        content: Any,
        roomId: str,  # noqa: N803
    ) -> tuple[int, Any]:
        body = _object(content)
        earliest, latest = body.get("earliest_events"), body.get("latest_events")
        for name, value in (("earliest_events", earliest), ("latest_events", latest)):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise BadJson(f"'{name}' must be a list of event IDs")
            # They are looked up in the events table: PostgreSQL refuses NUL.
            check_no_nul(*value)
        limit, min_depth = body.get("limit", 10), body.get("min_depth", 0)
        if not isinstance(limit, int) or not isinstance(min_depth, int):
            raise BadJson("'limit' and 'min_depth' must be integers")
        return 200, await fed.reads.get_missing_events(
            origin, roomId, earliest, latest, limit, min_depth
        )

    # -- queries ----------------------------------------------------------------------------------
    async def query_profile(request: Request, origin: str, content: Any) -> tuple[int, Any]:
        user_id = query_string(request, "user_id", required=True)
        assert user_id is not None
        return 200, await fed.queries.query_profile(user_id, query_string(request, "field"))

    async def query_directory(request: Request, origin: str, content: Any) -> tuple[int, Any]:
        alias = query_string(request, "room_alias", required=True)
        assert alias is not None
        return 200, await fed.queries.query_directory(alias)

    async def user_devices(
        request: Request,
        origin: str,
        content: Any,
        userId: str,  # noqa: N803
    ) -> tuple[int, Any]:
        return 200, await fed.queries.user_devices(userId)

    async def user_keys_query(request: Request, origin: str, content: Any) -> tuple[int, Any]:
        return 200, await fed.queries.query_keys(_object(content))

    async def user_keys_claim(request: Request, origin: str, content: Any) -> tuple[int, Any]:
        return 200, await fed.queries.claim_keys(_object(content))

    # -- membership (server-server API "Joining Rooms", "Leaving Rooms", invites) ---------
    def make_membership(membership: str, versioned: bool) -> Any:
        """GET make_join / make_leave / make_knock: the event template to sign."""

        async def servlet(
            request: Request,
            origin: str,
            content: Any,
            roomId: str,  # noqa: N803
            userId: str,  # noqa: N803
        ) -> tuple[int, Any]:
            # Without `ver` the asking server supports room version 1 only
            # (which has no knocking); make_leave takes no `ver`.
            versions = (query_strings(request, "ver") or ["1"]) if versioned else ["1"]
            return 200, await fed.membership.make_membership(
                origin, roomId, userId, membership, versions
            )

        servlet.__name__ = f"make_{membership}"
        return servlet

    async def send_knock(
        request: Request,
        origin: str,
        content: Any,
        roomId: str,  # noqa: N803
        eventId: str,  # noqa: N803
    ) -> tuple[int, Any]:
        return 200, await fed.membership.send_knock(origin, roomId, eventId, _object(content))

    async def send_join(
        request: Request,
        origin: str,
        content: Any,
        roomId: str,  # noqa: N803
        eventId: str,  # noqa: N803
    ) -> tuple[int, Any]:
        # `omit_members` is accepted and ignored: the answer always has every member.
        return 200, await fed.membership.send_join(origin, roomId, eventId, _object(content))

    async def send_leave(
        request: Request,
        origin: str,
        content: Any,
        roomId: str,  # noqa: N803
        eventId: str,  # noqa: N803
    ) -> tuple[int, Any]:
        await fed.membership.send_membership(origin, roomId, eventId, _object(content), "leave")
        return 200, {}

    async def invite(
        request: Request,
        origin: str,
        content: Any,
        roomId: str,  # noqa: N803
        eventId: str,  # noqa: N803
    ) -> tuple[int, Any]:
        return 200, await fed.membership.on_invite(origin, roomId, eventId, _object(content))

    async def version(request: Request) -> tuple[int, Any]:
        return 200, {"server": {"name": "Atrium", "version": atrium.__version__}}

    route("PUT", "/send/{txnId}", send_transaction)
    route("GET", "/event/{eventId}", get_event)
    route("GET", "/state/{roomId}", get_state)
    route("GET", "/state_ids/{roomId}", get_state_ids)
    route("GET", "/event_auth/{roomId}/{eventId}", get_event_auth)
    route("GET", "/backfill/{roomId}", backfill)
    route("POST", "/get_missing_events/{roomId}", get_missing_events)
    route("GET", "/query/profile", query_profile)
    route("GET", "/query/directory", query_directory)
    route("GET", "/user/devices/{userId}", user_devices)
    route("POST", "/user/keys/query", user_keys_query)
    route("POST", "/user/keys/claim", user_keys_claim)
    route("GET", "/make_join/{roomId}/{userId}", make_membership("join", versioned=True))
    route("GET", "/make_leave/{roomId}/{userId}", make_membership("leave", versioned=False))
    route("GET", "/make_knock/{roomId}/{userId}", make_membership("knock", versioned=True))
    route("PUT", "/send_knock/{roomId}/{eventId}", send_knock)
    route("PUT", "/send_join/{roomId}/{eventId}", send_join, FEDERATION_V2)
    route("PUT", "/send_leave/{roomId}/{eventId}", send_leave, FEDERATION_V2)
    route("PUT", "/invite/{roomId}/{eventId}", invite, FEDERATION_V2)
    # Unauthenticated (server-server API "Server implementation").
    router.register("GET", FEDERATION_V1 + "/version", version, "federation")
