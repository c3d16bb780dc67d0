"""/versions, /.well-known/matrix/client and /capabilities."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.events.room_versions import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS
from atrium.http.server import Router, client_paths

SUPPORTED_VERSIONS = [
    "r0.6.1",
    "v1.1",
    "v1.2",
    "v1.3",
    "v1.4",
    "v1.5",
    "v1.6",
    "v1.7",
    "v1.8",
    "v1.9",
    "v1.10",
    "v1.11",
]


def register_servlets(hs: Any, router: Router) -> None:
    async def versions(request: Request) -> tuple[int, Any]:
        return 200, {"versions": SUPPORTED_VERSIONS, "unstable_features": {}}

    async def well_known(request: Request) -> tuple[int, Any]:
        return 200, {"m.homeserver": {"base_url": hs.config.baseurl()}}

    async def capabilities(request: Request) -> tuple[int, Any]:
        await hs.auth.get_requester(request)
        return 200, {
            "capabilities": {
                "m.room_versions": {
                    "default": DEFAULT_ROOM_VERSION.identifier,
                    "available": {v: "stable" for v in KNOWN_ROOM_VERSIONS},
                },
                "m.change_password": {"enabled": True},
                "m.set_displayname": {"enabled": True},
                "m.set_avatar_url": {"enabled": True},
                "m.3pid_changes": {"enabled": False},
            }
        }

    router.register("GET", "/_matrix/client/versions", versions, group="client_read")
    router.register("GET", "/.well-known/matrix/client", well_known, group="client_read")
    router.register("GET", client_paths("/capabilities"), capabilities, group="client_read")
