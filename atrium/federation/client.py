"""The federation HTTP client: signed JSON requests to other homeservers.

``FederationHttpClient.request`` resolves the destination (discovery.py),
connects through the checked TLS endpoints (connect.py), signs the request
with X-Matrix (request_auth.py), applies a timeout and a response size
limit, and parses the JSON answer. Failures are one of two exceptions:

- ``HttpResponseError``: the server answered with a non-2xx status (its
  Matrix error body, if any, is kept);
- ``RequestSendFailed``: no answer (unresolvable, refused address, TLS
  failure, timeout, bad JSON, too large).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from signedjson.types import SigningKey
from twisted.internet import defer
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

import atrium
from atrium.federation.config import FederationConfig
from atrium.federation.connect import FederationEndpointFactory, HostResolver, resolve_host
from atrium.federation.discovery import ServerResolver
from atrium.federation.request_auth import authorization_headers
from atrium.federation.responses import ResponseTooLargeError, parse_json_body, read_body_limited
from atrium.federation.tls import ClientTLSPolicy
from atrium.util.clock import Clock

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
# Responses bigger than this are refused (a /state of a large room fits).
MAX_RESPONSE_BYTES = 100 * 1024 * 1024
USER_AGENT = f"Atrium/{atrium.__version__}".encode("ascii")

QueryArgs = Mapping[str, str | int | Sequence[str]]


class HttpResponseError(Exception):
    """The remote server answered with an error status."""

    def __init__(self, code: int, body: Any) -> None:
        self.code = code
        self.body = body
        detail = body.get("error") if isinstance(body, dict) else None
        super().__init__(f"HTTP {code}: {detail or 'error'}")

    @property
    def errcode(self) -> str | None:
        return self.body.get("errcode") if isinstance(self.body, dict) else None


class RequestSendFailed(Exception):
    """No usable answer from the remote server."""


@implementer(IBodyProducer)
class _BytesProducer:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> defer.Deferred[None]:  # noqa: N802
        consumer.write(self.body)
        return defer.succeed(None)

    def pauseProducing(self) -> None:  # noqa: N802
        pass

    def stopProducing(self) -> None:  # noqa: N802
        pass


def build_uri(path: str, args: QueryArgs | None = None) -> str:
    """The request target: an already-escaped path plus the encoded query."""
    if not args:
        return path
    pairs: list[tuple[str, str]] = []
    for key, value in args.items():
        if isinstance(value, str | int):
            pairs.append((key, str(value)))
        else:
            pairs.extend((key, str(v)) for v in value)
    return f"{path}?{urlencode(pairs)}"


def build_agent(
    reactor: Any, config: FederationConfig, resolver: HostResolver = resolve_host
) -> tuple[Agent, HTTPConnectionPool]:
    """An Agent that only makes checked TLS connections, and its pool."""
    tls = ClientTLSPolicy(config.verify_certificates, config.ca_file)
    endpoints = FederationEndpointFactory(reactor, tls, config.allow_private_ips, resolver)
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 5
    pool.cachedConnectionTimeout = 120
    pool.retryAutomatically = False
    return Agent.usingEndpointFactory(reactor, endpoints, pool=pool), pool


class FederationHttpClient:
    """Signed requests from ``server_name`` to other homeservers."""

    def __init__(
        self,
        reactor: Any,
        clock: Clock,
        server_name: str,
        signing_key: SigningKey,
        config: FederationConfig,
        *,
        host_resolver: HostResolver = resolve_host,
        well_known_port: int = 443,
    ) -> None:
        self.reactor = reactor
        self.clock = clock
        self.server_name = server_name
        self.signing_key = signing_key
        self.agent, self._pool = build_agent(reactor, config, host_resolver)
        self.resolver = ServerResolver(self.agent, clock, well_known_port)

    async def request(
        self,
        destination: str,
        method: str,
        path: str,
        *,
        args: QueryArgs | None = None,
        content: Any = None,
        sign: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> Any:
        """Send one request and return the parsed JSON answer (see module doc)."""
        uri = build_uri(path, args)
        try:
            target = await self.resolver.resolve(destination)
        except ValueError as e:
            raise RequestSendFailed(str(e)) from e
        headers = Headers(
            {
                b"Host": [target.host_header.encode("idna")],
                b"User-Agent": [USER_AGENT],
                b"Accept": [b"application/json"],
            }
        )
        body = None
        if content is not None:
            raw = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            body = _BytesProducer(raw)
            headers.addRawHeader(b"Content-Type", b"application/json")
        if sign:
            for value in authorization_headers(
                self.server_name, destination, method, uri, content, self.signing_key
            ):
                headers.addRawHeader(b"Authorization", value)
        url = (target.base_url() + uri).encode("ascii")
        try:
            d = self.agent.request(method.encode("ascii"), url, headers, body)
            d.addTimeout(timeout, self.reactor)
            response = await d
            raw_body = await read_body_limited(response, max_response_bytes)
        except (defer.TimeoutError, defer.CancelledError) as e:
            raise RequestSendFailed(f"{method} {destination}{path}: timed out") from e
        except ResponseTooLargeError as e:
            raise RequestSendFailed(f"{method} {destination}{path}: {e}") from e
        except Exception as e:
            raise RequestSendFailed(f"{method} {destination}{path}: {_describe(e)}") from e
        try:
            parsed = parse_json_body(raw_body) if raw_body.strip() else None
        except ValueError:
            parsed = None
            if 200 <= response.code < 300:
                raise RequestSendFailed(
                    f"{method} {destination}{path}: answer is not JSON"
                ) from None
        if not 200 <= response.code < 300:
            raise HttpResponseError(response.code, parsed)
        return parsed

    async def get_json(self, destination: str, path: str, **kwargs: Any) -> Any:
        return await self.request(destination, "GET", path, **kwargs)

    async def put_json(self, destination: str, path: str, content: Any, **kwargs: Any) -> Any:
        return await self.request(destination, "PUT", path, content=content, **kwargs)

    async def post_json(self, destination: str, path: str, content: Any, **kwargs: Any) -> Any:
        return await self.request(destination, "POST", path, content=content, **kwargs)

    async def close(self) -> None:
        await self._pool.closeCachedConnections()


def _describe(error: BaseException) -> str:
    """A one-line reason, unwrapping twisted.web's exception wrappers."""
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(str(getattr(r, "value", r)) for r in reasons)
    return str(error) or type(error).__name__
