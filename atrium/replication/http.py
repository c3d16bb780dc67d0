"""The HTTP replication endpoints processes call on each other (route group "replication").

- ``GET /_atrium/replication/streams/{stream}/updates?instance=&from=&to=&limit=``:
  the rows ``instance`` wrote in (from, to], as ``{"rows": [[token, row]...],
  "upto": int, "limited": bool}``. A stream that lives only in memory is
  served by its writer alone.
- ``register_replication_endpoint(hs, router, name, handler)``: the generic
  mechanism for ``POST /_atrium/replication/{name}/{txn_id}`` calls (e.g.
  send_events): authenticated, and deduplicated by transaction ID, so a
  caller retrying after a lost answer gets the first answer instead of a
  second execution. ``ReplicationHttpClient.call_endpoint`` is the caller.

Every endpoint requires ``Authorization: Bearer <worker_replication_secret>``
(compared in constant time); a missing or wrong secret is 403 M_FORBIDDEN.
With no secret configured the endpoints are disabled (403 for everyone).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web.server import Request

from atrium.errors import Forbidden, InvalidParam, MatrixError, NotFound
from atrium.http.request import parse_json_object, query_int, query_string
from atrium.replication.client import REPLICATION_PREFIX, updates_to_json

logger = logging.getLogger(__name__)

GROUP = "replication"
MAX_FETCH_LIMIT = 10_000

EndpointHandler = Callable[[dict[str, Any]], Awaitable[tuple[int, Any]]]


def check_replication_auth(hs: Any, request: Request) -> None:
    """Forbidden unless the request carries this deployment's replication secret."""
    secret = hs.config.worker_replication_secret
    if not secret:
        raise Forbidden("Replication endpoints are disabled: no worker_replication_secret")
    raw = request.getHeader(b"authorization") or b""
    header = raw if isinstance(raw, bytes) else raw.encode("latin-1", "replace")
    scheme, _, token = header.partition(b" ")
    expected = secret.encode("utf-8")
    # compare_digest takes the same time wherever the first difference is.
    if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), expected):
        raise Forbidden("Missing or wrong replication secret")


def register_servlets(hs: Any, router: Any) -> None:
    async def stream_updates(request: Request, stream: str) -> tuple[int, Any]:
        check_replication_auth(hs, request)
        stream_obj = hs.streams.get(stream)
        if stream_obj is None:
            raise NotFound(f"Unknown stream {stream!r}")
        instance = query_string(request, "instance", required=True)
        assert instance is not None
        from_token = query_int(request, "from")
        to_token = query_int(request, "to")
        if from_token is None or to_token is None:
            raise InvalidParam("'from' and 'to' are required")
        limit = query_int(request, "limit", 500, minimum=1, maximum=MAX_FETCH_LIMIT)
        assert limit is not None
        if stream_obj.IN_MEMORY and instance != hs.instance_name:
            raise NotFound(f"{stream} rows of {instance!r} live on that process, not here")
        updates = await stream_obj.get_updates(instance, from_token, to_token, limit)
        return 200, updates_to_json(updates)

    router.register(
        "GET", f"{REPLICATION_PREFIX}/streams/{{stream}}/updates", stream_updates, GROUP
    )


class _Entry:
    __slots__ = ("done", "result", "failure", "waiters")

    def __init__(self) -> None:
        self.done = False
        self.result: tuple[int, Any] | None = None
        self.failure: Failure | None = None
        self.waiters: list[defer.Deferred[None]] = []

    def value(self) -> tuple[int, Any]:
        if self.failure is not None:
            self.failure.raiseException()
        assert self.result is not None
        return self.result


class _ResponseCache:
    """Answers by transaction ID, kept for ``ttl`` seconds after they complete.

    A request arriving while the first with its ID still runs waits for the
    same answer. Matrix errors are answers too; any other exception is not
    remembered, so a retry runs the request again.
    """

    def __init__(self, clock: Any, ttl: float) -> None:
        self.clock = clock
        self.ttl = ttl
        self._entries: dict[str, _Entry] = {}

    async def get_or_run(
        self, txn_id: str, fn: Callable[[], Awaitable[tuple[int, Any]]]
    ) -> tuple[int, Any]:
        entry = self._entries.get(txn_id)
        if entry is None:
            entry = _Entry()
            self._entries[txn_id] = entry
            # Runs on even if this caller goes away: a retry will want the answer.
            defer.ensureDeferred(self._run(txn_id, entry, fn))
        if not entry.done:
            d: defer.Deferred[None] = defer.Deferred()
            entry.waiters.append(d)
            await d
        return entry.value()

    async def _run(
        self, txn_id: str, entry: _Entry, fn: Callable[[], Awaitable[tuple[int, Any]]]
    ) -> None:
        keep = True
        try:
            entry.result = await fn()
        except MatrixError:
            entry.failure = Failure()
        except Exception:
            entry.failure = Failure()
            keep = False
        entry.done = True
        if keep:
            self.clock.call_later(self.ttl, self._entries.pop, txn_id, None)
        else:
            self._entries.pop(txn_id, None)
        waiters, entry.waiters = entry.waiters, []
        for d in waiters:
            d.callback(None)


def register_replication_endpoint(
    hs: Any, router: Any, name: str, handler: EndpointHandler, cache_seconds: float = 600.0
) -> None:
    """Serve ``POST /_atrium/replication/{name}/{txn_id}`` with ``handler(body)``.

    The handler returns ``(status, json)``; that answer is remembered per
    transaction ID for ``cache_seconds`` after it completes.
    """
    cache = _ResponseCache(hs.clock, cache_seconds)

    async def servlet(request: Request, txn_id: str) -> tuple[int, Any]:
        check_replication_auth(hs, request)
        body = parse_json_object(request, hs.config.max_request_size, allow_empty=True)
        return await cache.get_or_run(txn_id, lambda: handler(body))

    servlet.__name__ = f"replication_{name}"
    router.register("POST", f"{REPLICATION_PREFIX}/{name}/{{txn_id}}", servlet, GROUP)
