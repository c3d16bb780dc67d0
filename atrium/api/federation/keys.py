"""Server key endpoints (route group "federation_keys"; not request-signed).

- ``GET /_matrix/key/v2/server``: our keys, signed (spec "Publishing Keys");
- ``GET /_matrix/key/v2/query/{serverName}`` and ``POST /_matrix/key/v2/query``:
  acting as a notary (spec "Querying Keys Through Another Server"): the
  server's own response, additionally signed by us.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.errors import BadJson
from atrium.events.validation import is_valid_server_name
from atrium.http.request import parse_json_object, query_int
from atrium.http.server import Router

KEY_PREFIX = "/_matrix/key/v2"
# A POST query may not make us fetch keys for more servers than this.
MAX_NOTARY_SERVERS = 50


def register_servlets(hs: Any, router: Router) -> None:
    keyring = hs.federation.keyring

    async def server_keys(request: Request) -> tuple[int, Any]:
        return 200, keyring.own_key_response()

    async def query_one(request: Request, serverName: str) -> tuple[int, Any]:  # noqa: N803
        minimum = query_int(request, "minimum_valid_until_ts") or hs.clock.time_msec()
        if not is_valid_server_name(serverName):
            return 200, {"server_keys": []}
        return 200, {"server_keys": await keyring.notary_responses(serverName, minimum)}

    async def query_many(request: Request) -> tuple[int, Any]:
        body = parse_json_object(request, hs.config.max_request_size)
        wanted = body.get("server_keys")
        if not isinstance(wanted, dict):
            raise BadJson("'server_keys' must be an object")
        if len(wanted) > MAX_NOTARY_SERVERS:
            raise BadJson(f"At most {MAX_NOTARY_SERVERS} servers per query")
        now = hs.clock.time_msec()
        responses: list[dict[str, Any]] = []
        for server_name, by_key in wanted.items():
            if not isinstance(server_name, str) or not is_valid_server_name(server_name):
                continue
            minimum = now
            if isinstance(by_key, dict):
                for criteria in by_key.values():
                    ts = (
                        criteria.get("minimum_valid_until_ts")
                        if isinstance(criteria, dict)
                        else None
                    )
                    if isinstance(ts, int) and ts > minimum:
                        minimum = ts
            responses.extend(await keyring.notary_responses(server_name, minimum))
        return 200, {"server_keys": responses}

    router.register("GET", KEY_PREFIX + "/server", server_keys, "federation_keys")
    router.register("GET", KEY_PREFIX + "/query/{serverName}", query_one, "federation_keys")
    router.register("POST", KEY_PREFIX + "/query", query_many, "federation_keys")
