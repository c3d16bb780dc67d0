"""Accounts: register, login, logout, whoami, password, devices.

Spec: client-server API "Client Authentication", "Account registration and
management" and "Device Management".
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.errors import (
    BadJson,
    Forbidden,
    InteractiveAuthIncomplete,
    MissingParam,
    NotFound,
    Unknown,
)
from atrium.handlers.registration import user_id_from_identifier
from atrium.http.request import (
    optional_identifier,
    optional_text,
    parse_json_object,
    query_string,
)
from atrium.http.server import Router, client_paths


def _ip(request: Request) -> str:
    return request.getClientAddress().host if request.getClientAddress() else "unknown"


def register_servlets(hs: Any, router: Router) -> None:
    config = hs.config
    auth = hs.auth
    accounts = hs.accounts

    def body_of(request: Request, allow_empty: bool = False) -> dict[str, Any]:
        return parse_json_object(request, config.max_request_size, allow_empty)

    async def uia_or_401(request: Request, coro: Any) -> tuple[int, Any]:
        try:
            return await coro
        except InteractiveAuthIncomplete as e:
            return 401, e.result

    # -- registration ----------------------------------------------------------
    async def register(request: Request) -> tuple[int, Any]:
        kind = query_string(request, "kind", "user", allowed=("user", "guest"))
        body = body_of(request, allow_empty=True)
        hs.ratelimit_registration.check(_ip(request))

        async def go() -> tuple[int, Any]:
            return 200, await hs.registration.register_via_api(body, kind)

        return await uia_or_401(request, go())

    async def available(request: Request) -> tuple[int, Any]:
        username = query_string(request, "username", required=True)
        assert username is not None
        if not config.enable_registration:
            raise Forbidden("Registration has been disabled")
        await hs.registration.check_available(username.lower())
        return 200, {"available": True}

    # -- login / logout --------------------------------------------------------
    async def login_flows(request: Request) -> tuple[int, Any]:
        return 200, {"flows": [{"type": "m.login.password"}]}

    async def login(request: Request) -> tuple[int, Any]:
        body = body_of(request)
        login_type = body.get("type")
        if login_type != "m.login.password":
            raise Unknown(f"Unknown login type {login_type!r}")
        password = body.get("password")
        if not isinstance(password, str):
            raise (
                MissingParam("Missing 'password'")
                if password is None
                else BadJson("'password' must be a string")
            )
        user_id = user_id_from_identifier(body, config.server_name)
        hs.ratelimit_login.check(_ip(request))
        hs.ratelimit_login.check(user_id)
        if not await auth.check_password(user_id, password):
            raise Forbidden("Invalid username or password")
        device_id = optional_identifier(body, "device_id")
        display = optional_text(body, "initial_device_display_name")
        device_id, token = await auth.login(user_id, device_id, display)
        return 200, {
            "user_id": user_id,
            "access_token": token,
            "device_id": device_id,
            "home_server": config.server_name,
            "well_known": {"m.homeserver": {"base_url": config.baseurl()}},
        }

    async def logout(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        await hs.devices.delete_devices(requester.user_id, [requester.device_id])
        return 200, {}

    async def logout_all(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        devices = await accounts.get_devices(requester.user_id)
        await hs.devices.delete_devices(requester.user_id, list(devices))
        await accounts.delete_all_access_tokens(requester.user_id)
        return 200, {}

    async def whoami(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        return 200, {
            "user_id": requester.user_id,
            "device_id": requester.device_id,
            "is_guest": False,
        }

    # -- password ----------------------------------------------------------------
    async def change_password(request: Request) -> tuple[int, Any]:
        body = body_of(request)
        requester = await auth.get_requester(request)
        new_password = body.get("new_password")
        if not isinstance(new_password, str) or not new_password:
            raise MissingParam("Missing 'new_password'")

        async def go() -> tuple[int, Any]:
            await hs.uia.check(body, [["m.login.password"]], user_id=requester.user_id)
            await accounts.set_password_hash(
                requester.user_id, await auth.hash_password(new_password)
            )
            if body.get("logout_devices", True):
                devices = await accounts.get_devices(requester.user_id)
                others = [d for d in devices if d != requester.device_id]
                await hs.devices.delete_devices(requester.user_id, others)
                await accounts.delete_all_access_tokens(
                    requester.user_id, except_token_id=requester.token_id
                )
            return 200, {}

        return await uia_or_401(request, go())

    # -- devices -----------------------------------------------------------------
    def device_json(d: Any) -> dict[str, Any]:
        return {
            "device_id": d.device_id,
            "display_name": d.display_name,
            "last_seen_ts": d.last_seen_ts,
            "last_seen_ip": d.last_seen_ip,
        }

    async def list_devices(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        devices = await accounts.get_devices(requester.user_id)
        return 200, {"devices": [device_json(d) for d in devices.values()]}

    async def get_device(request: Request, device_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        device = await accounts.get_device(requester.user_id, device_id)
        if device is None:
            raise NotFound("No such device")
        return 200, device_json(device)

    async def update_device(request: Request, device_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        body = body_of(request, allow_empty=True)
        display = optional_text(body, "display_name")
        if not await accounts.update_device(requester.user_id, device_id, display):
            raise NotFound("No such device")
        await hs.devices.notify_device_update(requester.user_id, [device_id])
        return 200, {}

    async def delete_device(request: Request, device_id: str) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        body = body_of(request, allow_empty=True)
        if await accounts.get_device(requester.user_id, device_id) is None:
            raise NotFound("No such device")

        async def go() -> tuple[int, Any]:
            await hs.uia.check(body, [["m.login.password"]], user_id=requester.user_id)
            await hs.devices.delete_devices(requester.user_id, [device_id])
            return 200, {}

        return await uia_or_401(request, go())

    async def delete_devices(request: Request) -> tuple[int, Any]:
        requester = await auth.get_requester(request)
        body = body_of(request)
        device_ids = body.get("devices")
        if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
            raise BadJson("'devices' must be a list of device IDs")

        async def go() -> tuple[int, Any]:
            await hs.uia.check(body, [["m.login.password"]], user_id=requester.user_id)
            await hs.devices.delete_devices(requester.user_id, device_ids)
            return 200, {}

        return await uia_or_401(request, go())

    router.register("POST", client_paths("/register"), register, group="client_account")
    router.register("GET", client_paths("/register/available"), available, group="client_account")
    router.register("GET", client_paths("/login"), login_flows, group="client_account")
    router.register("POST", client_paths("/login"), login, group="client_account")
    router.register("POST", client_paths("/logout"), logout, group="client_account")
    router.register("POST", client_paths("/logout/all"), logout_all, group="client_account")
    router.register("GET", client_paths("/account/whoami"), whoami, group="client_read")
    router.register(
        "POST", client_paths("/account/password"), change_password, group="client_account"
    )
    router.register("GET", client_paths("/devices"), list_devices, group="client_read")
    router.register("GET", client_paths("/devices/{device_id}"), get_device, group="client_read")
    router.register(
        "PUT", client_paths("/devices/{device_id}"), update_device, group="client_account"
    )
    router.register(
        "DELETE", client_paths("/devices/{device_id}"), delete_device, group="client_account"
    )
    router.register("POST", client_paths("/delete_devices"), delete_devices, group="client_account")
