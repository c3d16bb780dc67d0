"""GET /voip/turnServer (client-server API "Voice over IP"); the
credentials are computed by ``atrium.handlers.voip.TurnHandler``."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.http.server import Router, client_paths


def register_servlets(hs: Any, router: Router) -> None:
    async def turn_server(request: Request) -> tuple[int, Any]:
        requester = await hs.auth.get_requester(request)
        return 200, hs.turn.credentials(requester.user_id)

    # Reads only the config and the clock: any process.
    router.register("GET", client_paths("/voip/turnServer"), turn_server, group="client_read")
