"""Authenticating federation servlets (server-server API "Request Authentication").

``signed(hs, servlet)`` wraps a servlet so it only runs for a request with a
valid X-Matrix signature: it reads the JSON body (the signed ``content``),
checks the Authorization header through ``hs.federation.authenticator`` and
calls ``servlet(request, origin, content, **path_params)``. Anything else
is a 401 M_UNAUTHORIZED before the servlet sees the request, so an unsigned
or forged request cannot change anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.web.server import Request

from atrium.errors import Unauthorized
from atrium.http.request import decode_json, read_body

FEDERATION_V1 = "/_matrix/federation/v1"
FEDERATION_V2 = "/_matrix/federation/v2"

SignedServlet = Callable[..., Awaitable[tuple[int, Any]]]


def signed(hs: Any, servlet: SignedServlet) -> Callable[..., Awaitable[tuple[int, Any]]]:
    async def authenticated(request: Request, **params: str) -> tuple[int, Any]:
        headers = request.requestHeaders.getRawHeaders(b"authorization") or []
        if not any(h.lstrip().lower().startswith(b"x-matrix") for h in headers):
            raise Unauthorized("Missing X-Matrix Authorization header")
        raw = read_body(request, hs.config.max_request_size)
        content = decode_json(raw) if raw.strip() else None
        method = request.method.decode("ascii")
        uri = request.uri.decode("utf-8", "replace")
        origin = await hs.federation.authenticator.authenticate(method, uri, headers, content)
        hs.federation.on_remote_request(origin)
        return await servlet(request, origin, content, **params)

    authenticated.__name__ = servlet.__name__
    return authenticated
