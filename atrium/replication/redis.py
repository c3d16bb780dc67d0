"""``RedisBus``: the replication bus over Redis pub/sub (txredisapi).

Each process keeps two connections: one that PUBLISHes and one that
SUBSCRIBEs to the deployment's channel (``redis.channel``, by default derived
from the server name). txredisapi uses the hiredis parser when hiredis is
installed. A message is one PUBLISH, so its lines (an update's RDATA rows and
POSITION) arrive together or not at all; Redis delivers every message to
every subscriber, the publisher's own included, in publish order.

Both connections reconnect by themselves with exponential back-off
(txredisapi's factories run on ``ClientService``). Whenever either comes back
the listener hears ``on_connected(reconnect=True)`` and re-runs the REPLICATE
catch-up: while the subscriber was away this process missed messages, and
while the publisher was away the others missed this process's (which are
dropped, not queued: the catch-up covers them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlparse

import txredisapi
from prometheus_client import Gauge
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.ssl import optionsForClientTLS

from atrium.replication.bus import BusConnection
from atrium.replication.commands import Command

logger = logging.getLogger(__name__)

# Labelled so that only processes with a Redis link export it: the embedded
# default (no Redis) has no series, and the "Redis lost" alert
# (deploy/prometheus/alerts.yml) cannot fire for it.
REPLICATION_CONNECTED = Gauge(
    "atrium_replication_connected",
    "1 while both Redis connections (publish and subscribe) of this process are up, else 0",
    ["transport"],
)


def default_channel(server_name: str) -> str:
    return f"atrium:{server_name}:replication"


class _Link:
    """What the two protocols report to."""

    def __init__(self, bus: RedisBus, role: str) -> None:
        self.bus = bus
        self.role = role
        self.protocol: Any = None
        self.first: defer.Deferred[None] = defer.Deferred()
        self.ever_ready = False

    def ready(self, protocol: Any) -> None:
        self.protocol = protocol
        self.bus._update_connected_gauge()
        if not self.ever_ready:
            self.ever_ready = True
            self.first.callback(None)
        else:
            logger.info("Redis %s connection re-established", self.role)
            self.bus._reconnected()

    def lost(self, protocol: Any) -> None:
        if self.protocol is protocol:
            self.protocol = None
            self.bus._update_connected_gauge()
            if not self.bus.stopping:
                logger.warning("Redis %s connection lost; reconnecting", self.role)


class _PublishProtocol(txredisapi.RedisProtocol):  # type: ignore[misc,name-defined]
    link: _Link

    def connectionLost(self, why: Any) -> None:
        self.link.lost(self)
        super().connectionLost(why)


class _SubscribeProtocol(txredisapi.SubscriberProtocol):  # type: ignore[misc]
    link: _Link

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        self.link.bus._deliver(str(message))

    def connectionLost(self, why: Any) -> None:
        self.link.lost(self)
        super().connectionLost(why)


class _Factory(txredisapi.RedisFactory):  # type: ignore[misc]
    def __init__(
        self,
        link: _Link,
        protocol: type,
        password: str | None,
        dbid: int | None,
        username: str | None,
        initial_delay: float,
        max_delay: float,
    ) -> None:
        super().__init__(
            None,
            dbid,
            1,
            isLazy=True,
            password=password,
            username=username,
            convertNumbers=False,
        )
        self.protocol = protocol
        self.link = link
        self.initialDelay = initial_delay
        self.maxDelay = max_delay

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        protocol.link = self.link
        protocol.whenConnected().addCallback(self._on_connected)
        return protocol

    def _on_connected(self, protocol: Any) -> None:
        defer.ensureDeferred(self.link.bus._prepare(self.link, protocol))


class RedisBus(BusConnection):
    """One process's link to the bus over Redis; see the module docstring."""

    def __init__(
        self,
        url: str,
        channel: str,
        client_name: str,
        reactor: Any = None,
        initial_delay: float = 0.2,
        max_delay: float = 30.0,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.url = url
        self.channel = channel
        self.client_name = client_name
        self.reactor = reactor
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.stopping = False
        self._factories: list[_Factory] = []
        self._publisher = _Link(self, "publish")
        self._subscriber = _Link(self, "subscribe")
        self._started = False
        self.dropped_messages = 0
        # PUBLISHes not yet acknowledged by Redis (stop() lets them finish).
        self._unacked: set[defer.Deferred[Any]] = set()

    def _endpoint(self) -> Any:
        parsed = urlparse(self.url)
        host = parsed.hostname or "127.0.0.1"
        port = parsed.port or 6379
        endpoint: Any = HostnameEndpoint(self.reactor, host, port, timeout=10)
        if parsed.scheme == "rediss":
            endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
        return endpoint

    def _credentials(self) -> tuple[str | None, str | None, int | None]:
        parsed = urlparse(self.url)
        password = unquote(parsed.password) if parsed.password else None
        username = unquote(parsed.username) if parsed.username else None
        path = parsed.path.strip("/")
        dbid = int(path) if path.isdigit() else None
        return username, password, dbid

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.stopping = False
        username, password, dbid = self._credentials()
        for link, protocol in (
            (self._subscriber, _SubscribeProtocol),
            (self._publisher, _PublishProtocol),
        ):
            factory = _Factory(
                link, protocol, password, dbid, username, self.initial_delay, self.max_delay
            )
            self._factories.append(factory)
            factory.startConnecting(self._endpoint())
        await defer.gatherResults([self._subscriber.first, self._publisher.first])
        if self.listener is not None:
            self.listener.on_connected(reconnect=False)

    async def _prepare(self, link: _Link, protocol: Any) -> None:
        """Name a fresh connection (so operators and tests can find it) and subscribe."""
        try:
            await protocol.execute_command("CLIENT", "SETNAME", f"{self.client_name}-{link.role}")
            if link is self._subscriber:
                await protocol.subscribe(self.channel)
        except Exception as e:
            logger.warning("Preparing the Redis %s connection failed: %s", link.role, e)
            protocol.transport.loseConnection()
            return
        link.ready(protocol)

    def _reconnected(self) -> None:
        if self.listener is not None and not self.stopping:
            self.listener.on_connected(reconnect=True)

    async def stop(self) -> None:
        if self._unacked:
            # The last messages (a CLEAR_USER_SYNC...) reach Redis before we hang up.
            pending = defer.DeferredList(list(self._unacked), consumeErrors=True)
            pending.addTimeout(2.0, self.reactor)
            try:
                await pending
            except defer.TimeoutError:
                logger.warning("Redis did not acknowledge the last messages")
        self.stopping = True
        self._started = False
        REPLICATION_CONNECTED.labels("redis").set(0)
        factories, self._factories = self._factories, []
        for factory in factories:
            try:
                await factory.disconnect()
            except Exception:
                logger.exception("Closing a Redis connection failed")

    def is_connected(self) -> bool:
        return all(
            link.protocol is not None and link.protocol.connected
            for link in (self._publisher, self._subscriber)
        )

    def _update_connected_gauge(self) -> None:
        # protocol.connected may still be set while connectionLost runs: the
        # links' own view (a protocol or None) is what counts here.
        up = all(link.protocol is not None for link in (self._publisher, self._subscriber))
        REPLICATION_CONNECTED.labels("redis").set(1 if up else 0)

    def send(self, commands: Sequence[Command]) -> None:
        if not commands:
            return
        protocol = self._publisher.protocol
        if protocol is None or not protocol.connected:
            # Not queued: after the reconnect, REPLICATE makes every process
            # fetch what it missed from this one.
            self.dropped_messages += 1
            logger.warning("Redis publish connection down; dropping a replication message")
            return
        text = "\n".join(c.to_line() for c in commands)
        d = protocol.publish(self.channel, text)
        d.addErrback(lambda f: logger.warning("Redis PUBLISH failed: %s", f.getErrorMessage()))
        self._unacked.add(d)
        d.addBoth(self._acked, d)

    def _acked(self, result: Any, d: defer.Deferred[Any]) -> Any:
        self._unacked.discard(d)
        return result
