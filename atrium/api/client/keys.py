"""End-to-end encryption endpoints and send-to-device (route group "keys").

Spec: client-server API "Key management API" (keys.yaml), "Cross-signing"
(cross_signing.yaml) and "Send-to-Device messaging" (to_device.yaml).
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.errors import InteractiveAuthIncomplete
from atrium.http.request import parse_json_object, query_string
from atrium.http.server import Router, client_paths
from atrium.sync.token import StreamToken


def register_servlets(hs: Any, router: Router) -> None:
    config = hs.config
    auth = hs.auth

    def body_of(request: Request, allow_empty: bool = False) -> dict[str, Any]:
        return parse_json_object(request, config.max_request_size, allow_empty)

    async def upload_keys(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        body = body_of(request, allow_empty=True)
        return 200, await hs.e2e_keys.upload_keys(requester.user_id, requester.device_id, body)

    async def query_keys(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        body = body_of(request)
        return 200, await hs.e2e_keys.query_keys(requester.user_id, body)

    async def claim_keys(request: Request) -> tuple[int, Any]:
        await auth.get_requester(request)
        body = body_of(request)
        return 200, await hs.e2e_keys.claim_keys(body)

    async def key_changes(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        from_text = query_string(request, "from", required=True)
        to_text = query_string(request, "to", required=True)
        assert from_text is not None and to_text is not None
        from_token = StreamToken.parse(from_text)
        to_token = StreamToken.parse(to_text)
        changes = await hs.devices.get_device_list_changes(requester.user_id, from_token, to_token)
        return 200, {"changed": sorted(changes.changed), "left": sorted(changes.left)}

    async def upload_signing_keys(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        body = body_of(request)
        try:
            await hs.cross_signing.upload_signing_keys(requester.user_id, body)
        except InteractiveAuthIncomplete as e:
            return 401, e.result
        return 200, {}

    async def upload_signatures(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        body = body_of(request)
        return 200, await hs.cross_signing.upload_signatures(requester.user_id, body)

    async def send_to_device(request: Request, event_type: str, txn_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        body = body_of(request)
        await hs.to_device.send_device_message(
            requester.user_id, requester.device_id, event_type, txn_id, body.get("messages")
        )
        return 200, {}

    router.register("POST", client_paths("/keys/upload"), upload_keys, group="client_master")
    router.register("POST", client_paths("/keys/query"), query_keys, group="keys")
    router.register("POST", client_paths("/keys/claim"), claim_keys, group="client_master")
    router.register("GET", client_paths("/keys/changes"), key_changes, group="keys")
    router.register(
        "POST",
        client_paths("/keys/device_signing/upload"),
        upload_signing_keys,
        group="client_master",
    )
    router.register(
        "POST", client_paths("/keys/signatures/upload"), upload_signatures, group="client_master"
    )
    router.register(
        "PUT",
        client_paths("/sendToDevice/{event_type}/{txn_id}"),
        send_to_device,
        group="client_master",
    )
