"""Third-party identifiers and third-party networks: what Atrium has none of.

Atrium keeps no third-party identifiers (email addresses, phone numbers)
and runs no bridges or application services, and says so truthfully:

- ``GET /account/3pid`` lists none; the endpoints that would add, bind,
  delete or unbind one answer 403 ``M_THREEPID_DENIED`` (the
  ``m.3pid_changes`` capability is off), and the requestToken endpoints
  400 ``M_THREEPID_MEDIUM_NOT_SUPPORTED`` (administrative_contact.yaml:
  "The homeserver does not support adding email addresses").
- ``GET /thirdparty/protocols`` is ``{}``; a protocol, location or user
  look-up finds nothing (404 ``M_NOT_FOUND``, third_party_lookup.yaml).
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.errors import MatrixError, NotFound
from atrium.http.server import Router, client_paths

THREEPID_DENIED = "This server does not support third-party identifiers"


def register_servlets(hs: Any, router: Router) -> None:
    auth = hs.auth

    async def list_threepids(request: Request) -> tuple[int, Any]:
        await auth.get_requester(request)
        return 200, {"threepids": []}

    async def change_threepid(request: Request) -> tuple[int, Any]:
        await auth.get_requester(request)
        raise MatrixError(403, THREEPID_DENIED, "M_THREEPID_DENIED")

    async def request_token(request: Request) -> tuple[int, Any]:
        await auth.get_requester(request)
        raise MatrixError(400, THREEPID_DENIED, "M_THREEPID_MEDIUM_NOT_SUPPORTED")

    async def protocols(request: Request) -> tuple[int, Any]:
        await auth.get_requester(request)
        return 200, {}

    async def protocol(request: Request, protocol: str) -> tuple[int, Any]:
        await auth.get_requester(request)
        raise NotFound("Unknown protocol: this server has no bridges")

    async def lookup(request: Request, protocol: str | None = None) -> tuple[int, Any]:
        await auth.get_requester(request)
        raise NotFound("No third-party networks are bridged by this server")

    # The POSTs change nothing today, but they are account changes: they sit
    # with the other account writes, so supporting 3PIDs later moves no route.
    router.register("GET", client_paths("/account/3pid"), list_threepids, group="client_read")
    for path in ("", "/add", "/bind", "/delete", "/unbind"):
        router.register(
            "POST", client_paths(f"/account/3pid{path}"), change_threepid, group="client_account"
        )
    for medium in ("email", "msisdn"):
        router.register(
            "POST",
            client_paths(f"/account/3pid/{medium}/requestToken"),
            request_token,
            group="client_account",
        )
    router.register("GET", client_paths("/thirdparty/protocols"), protocols, group="client_read")
    router.register(
        "GET", client_paths("/thirdparty/protocol/{protocol}"), protocol, group="client_read"
    )
    for kind in ("location", "user"):
        router.register("GET", client_paths(f"/thirdparty/{kind}"), lookup, group="client_read")
        router.register(
            "GET", client_paths(f"/thirdparty/{kind}/{{protocol}}"), lookup, group="client_read"
        )
