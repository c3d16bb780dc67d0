"""Server discovery: where to connect for a server name (server-server API
"Resolving server names").

Implemented steps:
1. an IP literal: that address, with the given port or 8448;
2. a hostname with an explicit port: that host and port;
3. otherwise ``https://<hostname>/.well-known/matrix/server``; a valid
   ``m.server`` delegates to ``<delegated_hostname>[:<delegated_port>]``,
   handled like 1 and 2 above, or with port 8448 when no port is given;
4-6. without a usable .well-known: the hostname on port 8448.

SRV records (steps 3.3, 3.4, 4 and 5) are not looked up: a deployment that
relies on SRV only must publish a .well-known file instead (docs/federation.md).

We connect to the (delegated) hostname and check the certificate names it,
with it as SNI; the ``Host`` header follows the spec for each case. The
.well-known answers (and failures) are cached: for the response's
``Cache-Control: max-age`` capped at 48 hours, 24 hours by default, and one
hour for failures.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from typing import Any

import attrs
from twisted.web.client import BrowserLikeRedirectAgent
from twisted.web.http_headers import Headers

from atrium.events.validation import is_valid_server_name
from atrium.federation.responses import parse_json_body, read_body_limited
from atrium.util.clock import Clock

logger = logging.getLogger(__name__)

DEFAULT_FEDERATION_PORT = 8448
WELL_KNOWN_PATH = "/.well-known/matrix/server"
WELL_KNOWN_MAX_BYTES = 50 * 1024
WELL_KNOWN_TIMEOUT = 10.0
DEFAULT_CACHE_MS = 24 * 3600 * 1000
MAX_CACHE_MS = 48 * 3600 * 1000
ERROR_CACHE_MS = 3600 * 1000
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)


@attrs.frozen
class ResolvedServer:
    """Where to send requests for one server name."""

    # Hostname or IP literal (no brackets) to connect to; the certificate
    # must name it, and it is the SNI unless it is an IP.
    host: str
    port: int
    # The Host header of requests.
    host_header: str

    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"


def split_server_name(server_name: str) -> tuple[str, int | None]:
    """(hostname or IP literal without brackets, port or None); ValueError if invalid."""
    if not is_valid_server_name(server_name):
        raise ValueError(f"{server_name!r} is not a valid server name")
    if server_name.startswith("["):
        end = server_name.index("]")
        host, rest = server_name[1:end], server_name[end + 1 :]
    else:
        host, sep, port_text = server_name.partition(":")
        rest = sep + port_text
    port = int(rest[1:]) if rest else None
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"{server_name!r} has an invalid port")
    return host, port


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _direct(server_name: str) -> ResolvedServer | None:
    """Steps 1 and 2 (also used for a delegated name): None when .well-known is needed."""
    host, port = split_server_name(server_name)
    if _is_ip_literal(host):
        return ResolvedServer(host, port or DEFAULT_FEDERATION_PORT, server_name)
    if port is not None:
        return ResolvedServer(host, port, server_name)
    return None


def cache_period_ms(cache_control: str | None) -> int:
    """How long to keep a .well-known answer, from its Cache-Control header."""
    if cache_control:
        lowered = cache_control.lower()
        if "no-store" in lowered or "no-cache" in lowered:
            return 0
        match = _MAX_AGE.search(cache_control)
        if match:
            return min(int(match.group(1)) * 1000, MAX_CACHE_MS)
    return DEFAULT_CACHE_MS


class ServerResolver:
    """Resolves server names, caching .well-known answers.

    ``agent`` must be an Agent over ``FederationEndpointFactory`` (so the
    .well-known request obeys the same address policy and TLS checks);
    ``well_known_port`` exists for tests (the spec uses 443).
    """

    def __init__(self, agent: Any, clock: Clock, well_known_port: int = 443) -> None:
        self.agent = BrowserLikeRedirectAgent(agent, redirectLimit=5)
        self.clock = clock
        self.well_known_port = well_known_port
        # hostname -> (delegated server name or None, expiry ms)
        self._cache: dict[str, tuple[str | None, int]] = {}

    async def resolve(self, server_name: str) -> ResolvedServer:
        direct = _direct(server_name)
        if direct is not None:
            return direct
        host, _ = split_server_name(server_name)
        delegated = await self.get_delegation(host)
        if delegated is not None:
            resolved = _direct(delegated)
            if resolved is not None:
                return resolved
            # 3.5 (SRV not used): the delegated hostname on the default port.
            return ResolvedServer(delegated, DEFAULT_FEDERATION_PORT, delegated)
        # 6 (SRV not used): the hostname on the default port.
        return ResolvedServer(host, DEFAULT_FEDERATION_PORT, host)

    async def get_delegation(self, hostname: str) -> str | None:
        """``m.server`` of the hostname's .well-known, or None (cached either way)."""
        now = self.clock.time_msec()
        cached = self._cache.get(hostname)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            delegated, period = await self._fetch_well_known(hostname)
        except Exception as e:
            logger.info("No .well-known delegation for %s: %s", hostname, e)
            delegated, period = None, ERROR_CACHE_MS
        if period > 0:
            self._cache[hostname] = (delegated, now + period)
        return delegated

    async def _fetch_well_known(self, hostname: str) -> tuple[str | None, int]:
        url = f"https://{hostname}:{self.well_known_port}{WELL_KNOWN_PATH}"
        d = self.agent.request(
            b"GET", url.encode("ascii"), Headers({b"Accept": [b"application/json"]})
        )
        d.addTimeout(WELL_KNOWN_TIMEOUT, self.clock.reactor)
        response = await d
        body = await read_body_limited(response, WELL_KNOWN_MAX_BYTES)
        if response.code != 200:
            raise ValueError(f"HTTP {response.code}")
        data = parse_json_body(body)
        if not isinstance(data, dict) or not isinstance(data.get("m.server"), str):
            raise ValueError("no 'm.server' string")
        delegated = data["m.server"]
        split_server_name(delegated)  # raises ValueError when invalid
        header = response.headers.getRawHeaders(b"cache-control")
        cache_control = b",".join(header).decode("latin-1") if header else None
        return delegated, cache_period_ms(cache_control)
