"""The JSON HTTP resource: a router of async servlet functions.

A servlet is ``async def servlet(request, **path_params) -> (status, body)``;
it parses, checks and calls a handler. Everything raised is turned into a
Matrix error body here: ``MatrixError`` as itself, anything else as a logged
500 ``M_UNKNOWN`` without a traceback to the client.

Each route names its *group* (``client_read``, ``sync``, ``federation``...):
the composition root mounts the groups a process serves, and the reverse-proxy
routing table is generated from the same registrations.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import unquote

import attrs
import orjson
from prometheus_client import Counter, Histogram
from twisted.internet import defer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from atrium.errors import MatrixError

logger = logging.getLogger(__name__)

Servlet = Callable[..., Awaitable[tuple[int, Any]]]

REQUESTS = Counter(
    "atrium_http_requests_total", "HTTP requests by route and status", ["method", "route", "code"]
)
REQUEST_SECONDS = Histogram(
    "atrium_http_request_seconds",
    "HTTP request processing time by route",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

_PARAM = re.compile(r"\{(\w+)\}")

# Path parameters are identifiers: room, user and event IDs, aliases, event
# types and state keys are at most 255 bytes (client-server API "Size limits",
# appendices "Identifier Grammar"), and the client-chosen ones without a
# stated limit (transaction IDs, tags, account data types, push rule IDs...)
# end up in database index keys, which PostgreSQL caps at about 2.7 kB.
MAX_PATH_PARAM_BYTES = 255

CLIENT_PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0", "/_matrix/client/unstable")


def client_paths(path: str, prefixes: Iterable[str] = CLIENT_PREFIXES) -> list[str]:
    """The same client-server path under each API version prefix."""
    return [p + path for p in prefixes]


@attrs.frozen
class Route:
    method: str
    template: str
    group: str
    name: str
    servlet: Servlet
    regex: re.Pattern[str]


def _compile(template: str) -> re.Pattern[str]:
    parts = _PARAM.split(template)
    out = []
    for i, part in enumerate(parts):
        out.append(f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part))
    return re.compile("^" + "".join(out) + "$")


class Router:
    """Route table shared by every listener of a process."""

    def __init__(self) -> None:
        self.routes: list[Route] = []
        # Fast path: literal paths (no parameters) by (method, path).
        self._literal: dict[tuple[str, str], Route] = {}
        self._by_prefix: dict[str, list[Route]] = {}

    def register(
        self,
        method: str,
        paths: str | Iterable[str],
        servlet: Servlet,
        group: str,
        name: str | None = None,
    ) -> None:
        for path in [paths] if isinstance(paths, str) else paths:
            route = Route(
                method.upper(), path, group, name or servlet.__name__, servlet, _compile(path)
            )
            self.routes.append(route)
            if "{" not in path:
                self._literal[(route.method, path)] = route
            else:
                self._by_prefix.setdefault(_static_prefix(path), []).append(route)

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """(route, path params, path_known_for_other_method)."""
        route = self._literal.get((method, path))
        if route is not None:
            return route, {}, True
        known = any((m, path) in self._literal for m in ("GET", "PUT", "POST", "DELETE"))
        for prefix, routes in self._by_prefix.items():
            if not path.startswith(prefix):
                continue
            for route in routes:
                m = route.regex.match(path)
                if m is None:
                    continue
                if route.method != method:
                    known = True
                    continue
                return route, {k: unquote(v) for k, v in m.groupdict().items()}, True
        return None, {}, known

    def groups(self) -> set[str]:
        return {r.group for r in self.routes}


def _static_prefix(template: str) -> str:
    return template.split("{", 1)[0]


def _encode(body: Any) -> bytes:
    # orjson: responses (a /sync of hundreds of rooms) are the largest JSON
    # Atrium writes; it is several times faster than the stdlib encoder.
    try:
        return orjson.dumps(body)
    except TypeError:
        # Integers beyond 64 bits (only in odd client-supplied content).
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def set_cors_headers(request: Request) -> None:
    request.setHeader(b"Access-Control-Allow-Origin", b"*")
    request.setHeader(b"Access-Control-Allow-Methods", b"GET, HEAD, POST, PUT, DELETE, OPTIONS")
    request.setHeader(
        b"Access-Control-Allow-Headers", b"X-Requested-With, Content-Type, Authorization, Date"
    )


class JsonResource(Resource):
    """Serves every route of a Router whose group is in ``groups``."""

    isLeaf = True

    def __init__(self, router: Router, groups: Iterable[str] | None = None) -> None:
        super().__init__()
        self.router = router
        self.groups = None if groups is None else frozenset(groups)

    def render(self, request: Request) -> Any:
        set_cors_headers(request)
        method = request.method.decode("ascii", "replace")
        if getattr(request, "too_large", False):
            limit = getattr(request, "max_body_size", 0)
            respond(
                request,
                413,
                {"errcode": "M_TOO_LARGE", "error": f"Request body is over the {limit} byte limit"},
            )
            return NOT_DONE_YET
        if method == "OPTIONS":
            respond(request, 200, {})
            return NOT_DONE_YET
        path = request.path.decode("utf-8", "replace")
        if "\x00" in path or b"\x00" in (request.uri or b"") or b"%00" in (request.uri or b""):
            # PostgreSQL cannot store NUL in text; no Matrix identifier contains one.
            respond(
                request,
                400,
                {"errcode": "M_INVALID_PARAM", "error": "NUL characters are not allowed"},
            )
            return NOT_DONE_YET
        route, params, known = self.router.match("GET" if method == "HEAD" else method, path)
        if route is not None and self.groups is not None and route.group not in self.groups:
            route, known = None, False
        too_long = next(
            (
                k
                for k, v in params.items()
                if len(v.encode("utf-8", "replace")) > MAX_PATH_PARAM_BYTES
            ),
            None,
        )
        if route is not None and too_long is not None:
            respond(
                request,
                400,
                {
                    "errcode": "M_INVALID_PARAM",
                    "error": f"Path parameter {too_long!r} is over {MAX_PATH_PARAM_BYTES} bytes",
                },
            )
            REQUESTS.labels(method, route.name, "400").inc()
            return NOT_DONE_YET
        if route is None:
            if known:
                respond(request, 405, {"errcode": "M_UNRECOGNIZED", "error": "Method not allowed"})
            else:
                respond(
                    request, 404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}
                )
            REQUESTS.labels(method, "unknown", "404").inc()
            return NOT_DONE_YET
        d = defer.ensureDeferred(self._run(request, route, method, params))
        # A client that goes away cancels its request (long-polls stop waiting).
        request.notifyFinish().addErrback(lambda _f: d.cancel())
        return NOT_DONE_YET

    async def _run(
        self, request: Request, route: Route, method: str, params: dict[str, str]
    ) -> None:
        start = time.perf_counter()
        code = 500
        try:
            code, body = await route.servlet(request, **params)
            if not request.finished and not request._disconnected:
                if isinstance(body, bytes):
                    request.setResponseCode(code)
                    request.write(body)
                    request.finish()
                else:
                    respond(request, code, body)
        except MatrixError as e:
            code = e.code
            respond(request, e.code, e.to_json())
        except defer.CancelledError:
            code = 499
        except Exception:
            code = 500
            logger.exception("%s %s failed", method, request.uri.decode("utf-8", "replace"))
            respond(request, 500, {"errcode": "M_UNKNOWN", "error": "Internal server error"})
        finally:
            REQUEST_SECONDS.labels(method, route.name).observe(time.perf_counter() - start)
            REQUESTS.labels(method, route.name, str(code)).inc()


def respond(request: Request, code: int, body: Any) -> None:
    """Write a JSON response unless the client has gone."""
    if request.finished or getattr(request, "_disconnected", False):
        return
    raw = _encode(body)
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", str(len(raw)).encode("ascii"))
    request.setHeader(b"Cache-Control", b"no-cache, no-store, must-revalidate")
    if request.method == b"HEAD":
        request.finish()
        return
    request.write(raw)
    request.finish()
