"""The Twisted site: a request class that stops reading oversized bodies."""

from __future__ import annotations

from typing import Any

from twisted.internet import address
from twisted.web.resource import Resource
from twisted.web.server import Request, Site


class AtriumRequest(Request):
    """Refuses to buffer a body beyond the site's ``max_body_size``.

    The body is dropped as it arrives (not kept in memory); the resource then
    answers 413 M_TOO_LARGE.
    """

    too_large = False
    max_body_size = 10 * 1024 * 1024

    def gotLength(self, length: int | None) -> None:
        self.max_body_size = getattr(self.channel.site, "max_body_size", self.max_body_size)
        if length is not None and length > self.max_body_size:
            self.too_large = True
        super().gotLength(length if not self.too_large else 0)

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        if self.content is not None and self.content.tell() + len(data) > self.max_body_size:
            self.too_large = True
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)


class ForwardedRequest(AtriumRequest):
    """A request that came through our reverse proxy (listener ``x_forwarded``).

    The client's address is the right-most X-Forwarded-For entry: the one
    our proxy appended for the connection it accepted. Entries to its left
    come from the client and can be forged, so they are not trusted.
    """

    def getClientAddress(self) -> Any:
        header = self.getHeader(b"x-forwarded-for")
        if header:
            forwarded = header.split(b",")[-1].strip().decode("ascii", "replace")
            if forwarded:
                if ":" in forwarded:
                    return address.IPv6Address("TCP", forwarded, 0)
                return address.IPv4Address("TCP", forwarded, 0)
        return super().getClientAddress()


class AtriumSite(Site):
    requestFactory = AtriumRequest

    def __init__(
        self, resource: Resource, max_body_size: int, x_forwarded: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(resource, **kwargs)
        self.max_body_size = max_body_size
        self.noisy = False
        if x_forwarded:
            self.requestFactory = ForwardedRequest

    def log(self, request: Request) -> None:
        # Access logging is done by metrics and the request logger, not per line.
        pass
