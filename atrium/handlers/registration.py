"""Registration and user-interactive authentication (spec: client-server API,
"Account registration" and "User-Interactive Authentication API").

UIA sessions live in memory on the process serving account endpoints (the
master): a session is short-lived and restarting only means the client
starts the flow again.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from atrium.errors import (
    BadJson,
    Forbidden,
    InteractiveAuthIncomplete,
    InvalidUsername,
    MissingParam,
    Unknown,
    UserInUse,
)
from atrium.handlers.auth import AuthHandler
from atrium.http.request import optional_identifier, optional_text
from atrium.storage.stores.accounts import AccountStore

# Localpart grammar for new users (spec appendices "User Identifiers").
_LOCALPART = re.compile(r"^[a-z0-9._=\-/+]+$")
_UIA_SESSION_TTL_S = 30 * 60


def user_id_from_identifier(body: dict[str, Any], server_name: str) -> str:
    """The user a login/UIA body names (``identifier`` or legacy ``user``)."""
    identifier = body.get("identifier")
    user: Any = None
    if isinstance(identifier, dict):
        if identifier.get("type") != "m.id.user":
            raise Unknown("Only m.id.user identifiers are supported")
        user = identifier.get("user")
    elif "user" in body:
        user = body["user"]
    if not isinstance(user, str) or not user:
        raise MissingParam("Missing user identifier")
    if user.startswith("@"):
        return user
    return f"@{user.lower()}:{server_name}"


class InteractiveAuth:
    """Tracks UIA sessions and which stages each has completed."""

    def __init__(self, auth: AuthHandler, clock: Any) -> None:
        self.auth = auth
        self.clock = clock
        self._sessions: dict[str, tuple[float, set[str]]] = {}

    def _expire(self) -> None:
        now = self.clock.time()
        for sid in [s for s, (t, _) in self._sessions.items() if now - t > _UIA_SESSION_TTL_S]:
            del self._sessions[sid]

    async def check(
        self, body: dict[str, Any], flows: list[list[str]], user_id: str | None = None
    ) -> dict[str, Any]:
        """Complete a stage from ``body["auth"]`` or raise InteractiveAuthIncomplete.

        ``user_id`` is the user who must prove themselves for m.login.password.
        Returns the auth dict once a whole flow is complete.
        """
        self._expire()
        auth = body.get("auth")
        if auth is not None and not isinstance(auth, dict):
            raise BadJson("'auth' must be an object")
        session_id = auth.get("session") if auth else None
        if not isinstance(session_id, str) or session_id not in self._sessions:
            session_id = secrets.token_urlsafe(16)
            self._sessions[session_id] = (self.clock.time(), set())
        completed = self._sessions[session_id][1]
        error: dict[str, Any] = {}
        if auth and "type" in auth:
            stage = auth["type"]
            if stage == "m.login.dummy":
                completed.add(stage)
            elif stage == "m.login.password" and user_id is not None:
                try:
                    named = user_id_from_identifier(auth, self.auth.server_name)
                except Exception:
                    named = None
                password = auth.get("password")
                if (
                    named == user_id
                    and isinstance(password, str)
                    and await self.auth.check_password(user_id, password)
                ):
                    completed.add(stage)
                else:
                    error = {"errcode": "M_FORBIDDEN", "error": "Invalid password"}
            else:
                error = {"errcode": "M_UNRECOGNIZED", "error": f"Unsupported auth type {stage!r}"}
        for flow in flows:
            if set(flow) <= completed:
                del self._sessions[session_id]
                return auth or {}
        result = {
            "flows": [{"stages": flow} for flow in flows],
            "params": {},
            "session": session_id,
            "completed": sorted(completed),
            **error,
        }
        raise InteractiveAuthIncomplete(session_id, result)


class RegistrationHandler:
    def __init__(
        self,
        accounts: AccountStore,
        auth: AuthHandler,
        uia: InteractiveAuth,
        clock: Any,
        server_name: str,
        enable_registration: bool,
    ) -> None:
        self.accounts = accounts
        self.auth = auth
        self.uia = uia
        self.clock = clock
        self.server_name = server_name
        self.enable_registration = enable_registration

    def check_localpart(self, localpart: str) -> str:
        user_id = f"@{localpart}:{self.server_name}"
        if not localpart or not _LOCALPART.match(localpart):
            raise InvalidUsername("User ID may only contain a-z, 0-9, and . _ = - / +")
        if len(user_id.encode("utf-8")) > 255:
            raise InvalidUsername("User ID is too long")
        return user_id

    async def check_available(self, localpart: str) -> str:
        user_id = self.check_localpart(localpart)
        if await self.accounts.get_user(user_id) is not None:
            raise UserInUse("User ID already taken")
        return user_id

    async def register_user(self, localpart: str, password: str | None, admin: bool = False) -> str:
        """Create a local user (used by the API, the CLI and the admin API)."""
        user_id = self.check_localpart(localpart.lower())
        password_hash = await self.auth.hash_password(password) if password else None
        if not await self.accounts.register_user(
            user_id, password_hash, self.clock.time_msec(), admin
        ):
            raise UserInUse("User ID already taken")
        return user_id

    async def register_via_api(self, body: dict[str, Any], kind: str) -> dict[str, Any]:
        """POST /register: closed unless ``enable_registration`` is set."""
        if kind == "guest":
            raise Forbidden("Guest access is disabled")
        if not self.enable_registration:
            raise Forbidden("Registration has been disabled")
        username = body.get("username")
        if username is not None and not isinstance(username, str):
            raise BadJson("'username' must be a string")
        password = body.get("password")
        if password is not None and not isinstance(password, str):
            raise BadJson("'password' must be a string")
        # Checked before the account exists: a bad one must not leave it half made.
        device_id = optional_identifier(body, "device_id")
        display = optional_text(body, "initial_device_display_name")
        if username:
            await self.check_available(username.lower())
        await self.uia.check(body, [["m.login.dummy"]])
        localpart = (username or f"u{secrets.token_hex(6)}").lower()
        user_id = await self.register_user(localpart, password)
        result: dict[str, Any] = {"user_id": user_id, "home_server": self.server_name}
        if not body.get("inhibit_login"):
            device_id, token = await self.auth.login(user_id, device_id, display)
            result.update(access_token=token, device_id=device_id)
        return result
