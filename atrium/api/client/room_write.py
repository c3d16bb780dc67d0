"""Room writes: createRoom, membership, send, state PUT, redact.

Spec: client-server API "Rooms", "Room membership", "Sending events",
"Redactions".
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.errors import BadJson, Forbidden
from atrium.events.validation import has_room_id_shape
from atrium.http.request import parse_json_object, query_strings
from atrium.http.server import Router, client_paths


def register_servlets(hs: Any, router: Router) -> None:
    config = hs.config
    auth = hs.auth
    members = hs.room_members
    creation = hs.event_creation

    def body_of(request: Request, allow_empty: bool = False) -> dict[str, Any]:
        return parse_json_object(request, config.max_request_size, allow_empty)

    def check_room_id(room_id: str) -> None:
        if not has_room_id_shape(room_id):
            raise BadJson(f"{room_id!r} is not a room ID")

    async def create_room(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        body = body_of(request, allow_empty=True)
        hs.ratelimit_message.check(requester.user_id)
        room_id, alias = await hs.room_creation.create_room(
            requester.user_id, body, requester.device_id
        )
        result = {"room_id": room_id}
        if alias:
            result["room_alias"] = alias
        return 200, result

    async def join(request: Request, room_id_or_alias: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        body = body_of(request, allow_empty=True)
        room_id, servers = await members.resolve_room(room_id_or_alias)
        reason = _reason(body)
        # Where to join a room this server is not in: `via` (spec v1.12) and
        # its older name `server_name`, then the servers the alias named.
        via = query_strings(request, "via") + query_strings(request, "server_name")
        await members.update_membership(
            requester.user_id,
            requester.user_id,
            room_id,
            "join",
            reason=reason,
            remote_servers=via + servers,
        )
        return 200, {"room_id": room_id}

    async def join_by_id(request: Request, room_id: str) -> tuple[int, Any]:
        check_room_id(room_id)
        return await join(request, room_id)

    def membership_servlet(action: str) -> Any:
        async def servlet(request: Request, room_id: str) -> tuple[int, Any]:
            check_room_id(room_id)
            requester = await auth.get_requester(request)
            body = body_of(request, allow_empty=action == "leave")
            if action == "leave":
                target = requester.user_id
            else:
                target = body.get("user_id")
                if not isinstance(target, str) or not target.startswith("@") or ":" not in target:
                    raise BadJson("'user_id' must be a user ID")
            await members.update_membership(
                requester.user_id, target, room_id, action, reason=_reason(body)
            )
            return 200, {}

        servlet.__name__ = f"room_{action}"
        return servlet

    async def forget(request: Request, room_id: str) -> tuple[int, Any]:
        check_room_id(room_id)
        requester = await auth.get_requester(request)
        await members.forget(requester.user_id, room_id)
        return 200, {}

    async def send_message(
        request: Request, room_id: str, event_type: str, txn_id: str
    ) -> tuple[int, Any]:
        check_room_id(room_id)
        requester = await auth.get_requester(request)
        content = body_of(request, allow_empty=True)
        if event_type == "m.room.redaction":
            redacts = content.get("redacts")
            if not isinstance(redacts, str):
                raise BadJson("m.room.redaction needs 'redacts' in content")
            return await _redact(requester, room_id, redacts, content, txn_id)
        hs.ratelimit_message.check(requester.user_id)
        event = await creation.create_and_send(
            {
                "type": event_type,
                "room_id": room_id,
                "sender": requester.user_id,
                "content": content,
            },
            txn_id=txn_id,
            device_id=requester.device_id,
        )
        return 200, {"event_id": event.event_id}

    async def put_state(
        request: Request, room_id: str, event_type: str, state_key: str = ""
    ) -> tuple[int, Any]:
        check_room_id(room_id)
        requester = await auth.get_requester(request)
        content = body_of(request, allow_empty=True)
        if event_type == "m.room.member":
            membership = content.get("membership")
            if not isinstance(membership, str):
                raise BadJson("m.room.member needs 'membership'")
            extra = {k: v for k, v in content.items() if k not in ("membership", "reason")}
            event = await members.update_membership(
                requester.user_id,
                state_key,
                room_id,
                membership,
                reason=_reason(content),
                extra_content=extra,
            )
            return 200, {"event_id": event.event_id}
        hs.ratelimit_message.check(requester.user_id)
        if event_type == "m.room.create":
            raise Forbidden("The create event cannot be replaced")
        event = await creation.create_and_send(
            {
                "type": event_type,
                "room_id": room_id,
                "sender": requester.user_id,
                "state_key": state_key,
                "content": content,
            }
        )
        return 200, {"event_id": event.event_id}

    async def put_state_empty_key(
        request: Request, room_id: str, event_type: str
    ) -> tuple[int, Any]:
        return await put_state(request, room_id, event_type, "")

    async def _redact(
        requester: Any, room_id: str, redacts: str, content: dict[str, Any], txn_id: str
    ) -> tuple[int, Any]:
        hs.ratelimit_message.check(requester.user_id)
        room_version = await creation.get_room_version(room_id)
        event_dict: dict[str, Any] = {
            "type": "m.room.redaction",
            "room_id": room_id,
            "sender": requester.user_id,
        }
        content = dict(content)
        if room_version.redacts_in_content:
            content["redacts"] = redacts
        else:
            content.pop("redacts", None)
            event_dict["redacts"] = redacts
        event_dict["content"] = content
        await hs.redactions.check_can_redact(requester.user_id, room_id, redacts)
        event = await creation.create_and_send(
            event_dict, txn_id=txn_id, device_id=requester.device_id
        )
        return 200, {"event_id": event.event_id}

    async def redact(request: Request, room_id: str, event_id: str, txn_id: str) -> tuple[int, Any]:
        check_room_id(room_id)
        requester = await auth.get_requester(request)
        body = body_of(request, allow_empty=True)
        content = {"reason": body["reason"]} if isinstance(body.get("reason"), str) else {}
        return await _redact(requester, room_id, event_id, content, txn_id)

    group = "client_write"
    router.register("POST", client_paths("/createRoom"), create_room, group)
    router.register("POST", client_paths("/join/{room_id_or_alias}"), join, group)
    router.register("POST", client_paths("/rooms/{room_id}/join"), join_by_id, group)

    async def knock(request: Request, room_id_or_alias: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        body = body_of(request, allow_empty=True)
        room_id, servers = await members.resolve_room(room_id_or_alias)
        # A room this server is not in is knocked on through `via` /
        # `server_name` and the servers the alias named (as for /join).
        via = query_strings(request, "via") + query_strings(request, "server_name")
        await members.update_membership(
            requester.user_id,
            requester.user_id,
            room_id,
            "knock",
            reason=_reason(body),
            remote_servers=via + servers,
        )
        return 200, {"room_id": room_id}

    router.register("POST", client_paths("/knock/{room_id_or_alias}"), knock, group)
    for action in ("invite", "leave", "kick", "ban", "unban"):
        router.register(
            "POST", client_paths(f"/rooms/{{room_id}}/{action}"), membership_servlet(action), group
        )
    router.register("POST", client_paths("/rooms/{room_id}/forget"), forget, group)
    router.register(
        "PUT", client_paths("/rooms/{room_id}/send/{event_type}/{txn_id}"), send_message, group
    )
    router.register(
        "PUT", client_paths("/rooms/{room_id}/state/{event_type}/{state_key}"), put_state, group
    )
    router.register(
        "PUT", client_paths("/rooms/{room_id}/state/{event_type}"), put_state_empty_key, group
    )
    router.register(
        "PUT", client_paths("/rooms/{room_id}/redact/{event_id}/{txn_id}"), redact, group
    )


def _reason(body: dict[str, Any]) -> str | None:
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise BadJson("'reason' must be a string")
    return reason
