"""Catch-up: fetching stream rows a process missed, and calling other processes.

``StreamFetcher.get_updates`` reads rows a writer published: from the
database for streams that live there (any process can read them), and from
the writer itself over the authenticated HTTP replication endpoint for
streams that live only in the writer's memory (``Stream.IN_MEMORY``, e.g.
typing).

``ReplicationHttpClient`` is the HTTP side: ``GET
/_atrium/replication/streams/{stream}/updates`` and ``call_endpoint`` for the
POST endpoints registered with ``atrium.replication.http.
register_replication_endpoint`` (e.g. send_events), which it retries with the
same transaction ID so the callee runs the request at most once.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any, cast
from urllib.parse import quote, urlencode

from twisted.internet import defer
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from atrium.replication.streams import Stream, StreamRow, StreamUpdates

logger = logging.getLogger(__name__)

REPLICATION_PREFIX = "/_atrium/replication"


class ReplicationHttpError(Exception):
    """The other process answered with an error, or could not be reached."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(f"{code}: {message}" if code is not None else message)
        self.code = code


@implementer(IBodyProducer)
class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> defer.Deferred[None]:
        consumer.write(self._data)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class ReplicationHttpClient:
    """Authenticated HTTP requests to another Atrium process of this deployment.

    ``locate(instance_name)`` returns that process's base URL (from
    ``instance_map``) or None if it is unknown.
    """

    def __init__(
        self,
        reactor: Any,
        secret: str | None,
        locate: Callable[[str], str | None],
        timeout: float = 30.0,
    ) -> None:
        self.reactor = reactor
        self.secret = secret
        self.locate = locate
        self.timeout = timeout
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 10
        self._pool = pool
        self._agent = Agent(reactor, pool=pool)

    async def close(self) -> None:
        await self._pool.closeCachedConnections()

    async def request(self, method: str, instance: str, path: str, body: Any = None) -> Any:
        """One request; the JSON answer of a 200, else ReplicationHttpError."""
        base = self.locate(instance)
        if base is None:
            raise ReplicationHttpError(None, f"no instance_map entry for {instance!r}")
        if self.secret is None:
            raise ReplicationHttpError(None, "worker_replication_secret is not configured")
        headers = Headers(
            {
                "Authorization": [f"Bearer {self.secret}"],
                "Content-Type": ["application/json"],
            }
        )
        producer: IBodyProducer | None = None
        if body is not None:
            raw_body = json.dumps(body, separators=(",", ":")).encode("utf-8")
            producer = cast(IBodyProducer, _Body(raw_body))
        url = base.rstrip("/") + path
        try:
            d = self._agent.request(method.encode(), url.encode(), headers, producer)
            d.addTimeout(self.timeout, self.reactor)
            response = await d
            raw = await readBody(response)
        except Exception as e:
            raise ReplicationHttpError(None, f"{method} {url}: {e!r}") from e
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        if response.code != 200:
            error = (
                data.get("error")
                if isinstance(data, dict)
                else raw[:200].decode("utf-8", "replace")
            )
            raise ReplicationHttpError(response.code, f"{method} {url}: {error}")
        return data

    async def get_stream_updates(
        self, stream: Stream, instance: str, from_token: int, to_token: int, limit: int
    ) -> StreamUpdates:
        """The writer's rows of ``stream`` in (from_token, to_token], from the writer."""
        query = urlencode(
            {"instance": instance, "from": from_token, "to": to_token, "limit": limit}
        )
        path = f"{REPLICATION_PREFIX}/streams/{quote(stream.NAME, safe='')}/updates?{query}"
        data = await self.request("GET", instance, path)
        return updates_from_json(stream, data)

    async def call_endpoint(
        self,
        instance: str,
        name: str,
        body: Mapping[str, Any],
        txn_id: str | None = None,
        attempts: int = 5,
        clock: Any = None,
    ) -> Any:
        """POST ``body`` to ``instance``'s replication endpoint ``name``.

        Connection failures and 5xx answers are retried (with back-off when a
        ``clock`` is given) under the same transaction ID; the endpoint
        answers a repeated ID with the first answer instead of running again.
        """
        txn_id = txn_id or secrets.token_urlsafe(12)
        path = f"{REPLICATION_PREFIX}/{quote(name, safe='')}/{quote(txn_id, safe='')}"
        delay = 0.1
        for attempt in range(attempts):
            try:
                return await self.request("POST", instance, path, dict(body))
            except ReplicationHttpError as e:
                retryable = e.code is None or e.code >= 500
                if not retryable or attempt == attempts - 1:
                    raise
                logger.warning("replication call %s to %s failed (%s); retrying", name, instance, e)
                if clock is not None:
                    await clock.sleep(delay)
                    delay = min(delay * 3, 10.0)
        raise AssertionError("unreachable")


def updates_to_json(updates: StreamUpdates) -> dict[str, Any]:
    return {
        "rows": [[token, row.to_json()] for token, row in updates.rows],
        "upto": updates.upto_token,
        "limited": updates.limited,
    }


def updates_from_json(stream: Stream, data: Any) -> StreamUpdates:
    """Parse the endpoint's answer; ReplicationHttpError if it is malformed."""
    try:
        rows: list[tuple[int, StreamRow]] = []
        for token, row in data["rows"]:
            if not isinstance(token, int):
                raise ValueError("token is not an integer")
            rows.append((token, stream.parse_row(row)))
        upto, limited = data["upto"], data["limited"]
        if not isinstance(upto, int) or not isinstance(limited, bool):
            raise ValueError("bad upto or limited")
    except (KeyError, TypeError, ValueError) as e:
        raise ReplicationHttpError(200, f"malformed stream updates: {e!r}") from e
    return StreamUpdates(rows, upto, limited)


class StreamFetcher:
    """Reads the rows of a stream a writer published, wherever they live."""

    def __init__(
        self, streams: Mapping[str, Stream], http: ReplicationHttpClient | None = None
    ) -> None:
        self.streams = streams
        self.http = http

    async def get_updates(
        self, stream_name: str, instance: str, from_token: int, to_token: int, limit: int
    ) -> StreamUpdates:
        stream = self.streams[stream_name]
        if stream.IN_MEMORY:
            if self.http is None:
                raise ReplicationHttpError(
                    None, f"{stream_name} lives on its writer: no HTTP client"
                )
            return await self.http.get_stream_updates(stream, instance, from_token, to_token, limit)
        return await stream.get_updates(instance, from_token, to_token, limit)
