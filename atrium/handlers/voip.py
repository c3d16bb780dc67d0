"""TURN credentials for VoIP calls (client-server API "Voice over IP",
``GET /voip/turnServer``).

With ``turn_shared_secret`` the credentials follow the TURN REST API
convention (draft-uberti-behave-turn-rest-00, what coturn's
``use-auth-secret`` checks): the username is ``<expiry>:<user_id>``, the
expiry a Unix time in seconds ``turn_user_lifetime`` from now, and the
password is base64(HMAC-SHA1(secret, username)), so the TURN server can
check them without asking us. Otherwise ``turn_username`` /
``turn_password`` are handed out as they are. With no ``turn_uris``, or
neither kind of credential, the answer is ``{}``: what clients (Element,
matrix-js-sdk) take as "no TURN server", falling back to their own STUN.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any


def turn_password(secret: str, username: str) -> str:
    """base64(HMAC-SHA1(secret, username)), padded, as coturn computes it."""
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


class TurnHandler:
    def __init__(
        self,
        clock: Any,
        uris: tuple[str, ...],
        shared_secret: str | None,
        username: str | None,
        password: str | None,
        lifetime_seconds: int,
    ) -> None:
        self.clock = clock
        self.uris = uris
        self.shared_secret = shared_secret
        self.username = username
        self.password = password
        self.lifetime_seconds = lifetime_seconds

    def credentials(self, user_id: str) -> dict[str, Any]:
        if not self.uris:
            return {}
        if self.shared_secret:
            expiry = int(self.clock.time()) + self.lifetime_seconds
            username = f"{expiry}:{user_id}"
            password = turn_password(self.shared_secret, username)
        elif self.username and self.password:
            username, password = self.username, self.password
        else:
            return {}
        return {
            "username": username,
            "password": password,
            "uris": list(self.uris),
            "ttl": self.lifetime_seconds,
        }
