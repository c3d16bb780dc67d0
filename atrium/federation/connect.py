"""Outbound connections for federation: DNS, the address policy, TLS.

Every outbound federation connection (requests, key fetches, .well-known
look-ups) goes through ``FederationEndpointFactory``: the hostname is resolved
here, and each resolved address is checked against the address policy
*before* connecting. Checking resolved IPs rather than hostnames is what
stops server-side request forgery: a server name (or a .well-known
delegation, or a redirect) that resolves to a loopback, private, link-local
or otherwise non-public address is refused unless ``allow_private_ips`` is
set. Addresses are tried in the order the resolver gives them.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web.client import URI
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from atrium.federation.tls import ClientTLSPolicy

# async (host, port) -> IP address strings
HostResolver = Callable[[str, int], Awaitable[list[str]]]


class BlockedAddressError(ConnectionError):
    """Every address of a host is one federation may not connect to."""


def is_ip_allowed(ip: str, allow_private: bool) -> bool:
    """Whether outbound federation may connect to ``ip``.

    Only globally routable unicast addresses are allowed by default;
    ``allow_private`` also allows loopback and private ranges (test setups
    and closed networks). Unspecified and multicast addresses never are.
    """
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified or address.is_multicast:
        return False
    if allow_private:
        return True
    return address.is_global


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses of ``host`` from the system resolver (in a thread)."""
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    infos = await threads.deferToThread(
        socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )
    seen: dict[str, None] = {}
    for _family, _type, _proto, _canon, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


@implementer(IStreamClientEndpoint)
class _CheckedTLSEndpoint:
    """Resolve, check each address, connect over TLS to the first that answers."""

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        tls: ClientTLSPolicy,
        resolver: HostResolver,
        allow_private: bool,
        connect_timeout: float,
    ) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.tls = tls
        self.resolver = resolver
        self.allow_private = allow_private
        self.connect_timeout = connect_timeout

    def connect(self, protocol_factory: Any) -> defer.Deferred[Any]:
        return defer.ensureDeferred(self._connect(protocol_factory))

    async def _connect(self, protocol_factory: Any) -> Any:
        try:
            addresses = await self.resolver(self.host, self.port)
        except OSError as e:
            raise ConnectionError(f"cannot resolve {self.host}: {e}") from e
        allowed = [a for a in addresses if is_ip_allowed(a, self.allow_private)]
        if not allowed:
            raise BlockedAddressError(
                f"{self.host} resolves to {', '.join(addresses) or 'nothing'}: "
                "not an address federation may connect to"
            )
        last_error: Exception | None = None
        for address in allowed:
            tcp_class = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
            tcp = tcp_class(self.reactor, address, self.port, timeout=self.connect_timeout)
            creator = self.tls.creator_for(self.host)
            try:
                return await wrapClientTLS(creator, tcp).connect(protocol_factory)
            except Exception as e:  # try the next address
                last_error = e
        assert last_error is not None
        raise last_error


@implementer(IAgentEndpointFactory)
class FederationEndpointFactory:
    """Endpoints for an Agent: ``https://host:port`` only, checked as above.

    The URI's host is both what is resolved and the name the certificate
    must carry (and the SNI), which is what server discovery asks for when
    SRV records are not used.
    """

    def __init__(
        self,
        reactor: Any,
        tls: ClientTLSPolicy,
        allow_private_ips: bool = False,
        resolver: HostResolver = resolve_host,
        connect_timeout: float = 10.0,
    ) -> None:
        self.reactor = reactor
        self.tls = tls
        self.allow_private_ips = allow_private_ips
        self.resolver = resolver
        self.connect_timeout = connect_timeout

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:  # noqa: N802
        if uri.scheme != b"https":
            raise ValueError(f"federation only speaks https, not {uri.scheme!r}")
        host = uri.host.decode("ascii").strip("[]")
        return _CheckedTLSEndpoint(
            self.reactor,
            host,
            uri.port,
            self.tls,
            self.resolver,
            self.allow_private_ips,
            self.connect_timeout,
        )
