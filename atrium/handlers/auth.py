"""Authentication: access tokens on requests, passwords, login sessions.

Passwords are hashed with scrypt (hashlib, no extra dependency) on a thread,
so a login never blocks the reactor.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from twisted.internet import threads
from twisted.web.server import Request

from atrium.errors import Forbidden, MissingToken, UnknownToken
from atrium.http.request import access_token_from
from atrium.storage.stores.accounts import AccountStore

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


@attrs.frozen
class Requester:
    """Who made a request: the user, their device and the token used."""

    user_id: str
    device_id: str
    token_id: int
    is_admin: bool = False
    access_token: str = attrs.field(default="", repr=False)


def hash_password_sync(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password_sync(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
        digest = hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


def new_access_token(user_id: str) -> str:
    # A readable prefix helps operators spot tokens in logs and secret scanners.
    return "atr_" + secrets.token_urlsafe(32)


def new_device_id() -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return "".join(secrets.choice(alphabet) for _ in range(10))


class AuthHandler:
    def __init__(self, accounts: AccountStore, clock: Any, server_name: str) -> None:
        self.accounts = accounts
        self.clock = clock
        self.server_name = server_name
        # Called with (user_id, device_id) when login creates a device; the
        # composition root points it at the device-list change recorder.
        self.on_new_device: Callable[[str, str], Awaitable[None]] | None = None

    async def hash_password(self, password: str) -> str:
        return await threads.deferToThread(hash_password_sync, password)

    async def check_password(self, user_id: str, password: str) -> bool:
        user = await self.accounts.get_user(user_id)
        if user is None or user.password_hash is None or user.deactivated:
            # Still spend the time of a real check so timing does not reveal
            # which user IDs exist.
            await threads.deferToThread(hash_password_sync, password)
            return False
        return await threads.deferToThread(check_password_sync, password, user.password_hash)

    async def get_requester(
        self, request: Request, allow_missing: bool = False
    ) -> Requester | None:
        """The Requester of an authenticated request (M_MISSING_TOKEN / M_UNKNOWN_TOKEN)."""
        token = access_token_from(request)
        if token is None:
            if allow_missing:
                return None
            raise MissingToken("Missing access token")
        lookup = await self.accounts.get_user_by_access_token(token)
        if lookup is None:
            raise UnknownToken("Unknown access token", soft_logout=False)
        user = await self.accounts.get_user(lookup.user_id)
        if user is None or user.deactivated:
            raise UnknownToken("User is deactivated", soft_logout=False)
        return Requester(lookup.user_id, lookup.device_id, lookup.token_id, user.admin, token)

    async def require_admin(self, request: Request) -> Requester:
        requester = await self.get_requester(request)
        assert requester is not None
        if not requester.is_admin:
            raise Forbidden("You are not a server admin")
        return requester

    async def login(
        self, user_id: str, device_id: str | None, display_name: str | None
    ) -> tuple[str, str]:
        """Create (or reuse) a device and a fresh access token; (device_id, token)."""
        device_id = device_id or new_device_id()
        created = await self.accounts.store_device(user_id, device_id, display_name)
        if created and self.on_new_device is not None:
            await self.on_new_device(user_id, device_id)
        token = new_access_token(user_id)
        await self.accounts.add_access_token(user_id, device_id, token, self.clock.time_msec())
        return device_id, token
