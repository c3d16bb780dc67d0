"""Reading HTTP response bodies from other servers, with a size limit.

A remote server controls how much it sends us; we stop reading (and drop the
connection) once a response passes the limit the caller gives, so one
misbehaving server cannot make us buffer unbounded data.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from atrium.http.request import decode_json


class ResponseTooLargeError(Exception):
    """The response body passed the size limit."""


class _LimitedCollector(protocol.Protocol):
    def __init__(
        self, deferred: defer.Deferred[bytes], max_bytes: int, declared: int | None
    ) -> None:
        self.deferred = deferred
        self.max_bytes = max_bytes
        self.declared = declared
        self.chunks: list[bytes] = []
        self.length = 0

    def connectionMade(self) -> None:  # noqa: N802
        if self.declared is not None and self.declared > self.max_bytes:
            self.deferred.errback(
                ResponseTooLargeError(
                    f"response body is {self.declared} bytes, over {self.max_bytes}"
                )
            )
            self.transport.abortConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.deferred.called:
            return
        self.length += len(data)
        if self.length > self.max_bytes:
            self.deferred.errback(
                ResponseTooLargeError(f"response body is over {self.max_bytes} bytes")
            )
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:  # noqa: N802
        if self.deferred.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.deferred.callback(b"".join(self.chunks))
        else:
            self.deferred.errback(reason)


async def read_body_limited(response: Any, max_bytes: int) -> bytes:
    """The whole body of a twisted.web response, refusing more than ``max_bytes``."""
    length = response.length if isinstance(response.length, int) else None
    d: defer.Deferred[bytes] = defer.Deferred()
    response.deliverBody(_LimitedCollector(d, max_bytes, length))
    return await d


def parse_json_body(raw: bytes) -> Any:
    """Strict JSON (NaN/Infinity refused); ValueError when it is not JSON."""
    from atrium.errors import MatrixError

    try:
        return decode_json(raw)
    except MatrixError:
        raise ValueError("response is not valid JSON") from None
