"""Joining a HomeServer to the replication bus (called from the composition root).

``build_replication_service(hs)`` returns None for a process alone (the
embedded default: its publisher applies rows locally and that is all), or a
``ReplicationService`` when other processes exist: ``redis.url`` is set (a
``RedisBus``), or a test put an ``InProcessBus`` in ``hs.replication_bus``
before ``setup()`` to run several HomeServer objects in one process.

The service's ``invalidator`` (a ``ReplicatingCacheInvalidator``) must be the
one the stores are built with, so that every cache invalidation also becomes
a caches-stream row. ``prepare()`` (called by the composition root as soon as
the streams exist, before anything reads stream positions) builds the
command handler and loads every writer's stored position, so in-memory
indexes built afterwards (the sync change caches) start from where this
process really starts. ``start()`` joins the bus: it attaches the command
handler to ``hs.publisher``, subscribes, sends REPLICATE and waits (bounded)
until every configured writer has announced its positions; then it sends a
PING naming this process every ``replication.ping_interval`` seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from atrium.replication.bus import BusConnection
from atrium.replication.client import ReplicationHttpClient, StreamFetcher
from atrium.replication.command_handler import CommandListener, ReplicationCommandHandler
from atrium.replication.commands import Command, PingCommand
from atrium.replication.redis import RedisBus, default_channel
from atrium.replication.streams.caches import CachesStream, ReplicatingCacheInvalidator

logger = logging.getLogger(__name__)

# How long caches-stream rows are kept for processes catching up.
CACHES_RETENTION_MS = 7 * 24 * 3600 * 1000


class ReplicationService:
    def __init__(
        self,
        hs: Any,
        connection: BusConnection,
        invalidator: ReplicatingCacheInvalidator,
        startup_timeout: float = 10.0,
    ) -> None:
        self.hs = hs
        self.connection = connection
        self.invalidator = invalidator
        self.startup_timeout = startup_timeout
        self.handler: ReplicationCommandHandler | None = None
        self.http_client: ReplicationHttpClient | None = None
        self._listeners: list[tuple[str, CommandListener]] = []
        self._prune_loop: Any = None
        self._ping_loop: Any = None

    def add_listener(self, command_name: str, listener: CommandListener) -> None:
        """Hear every ``command_name`` command (USER_SYNC, FEDERATION_ACK...)."""
        self._listeners.append((command_name, listener))
        if self.handler is not None:
            self.handler.add_listener(command_name, listener)

    def written_streams(self) -> Collection[str]:
        hs = self.hs
        names = [n for n in hs.streams if hs.instance_name in hs.config.writers_for(n)]
        # Every process that writes to the database may write cache invalidations.
        if CachesStream.NAME not in names:
            names.append(CachesStream.NAME)
        return names

    def expected_writers(self) -> dict[str, list[str]]:
        hs = self.hs
        return {
            name: [w for w in hs.config.writers_for(name) if w != hs.instance_name]
            for name in hs.streams
            if name != CachesStream.NAME
        }

    def send_command(self, *commands: Command) -> None:
        """Send commands (USER_SYNC, CLEAR_USER_SYNC...) as one bus message."""
        if self.handler is not None:
            self.handler.send_command(*commands)

    async def prepare(self) -> None:
        """Build the command handler and load the stored stream positions (see module doc)."""
        if self.handler is not None:
            return
        hs = self.hs
        config = hs.config

        def locate(instance: str) -> str | None:
            location = config.instance_map.get(instance)
            return location.url() if location is not None else None

        self.http_client = ReplicationHttpClient(
            hs.reactor, config.worker_replication_secret, locate
        )
        handler = ReplicationCommandHandler(
            instance_name=hs.instance_name,
            data_handler=hs.data_handler,
            streams=hs.streams,
            fetcher=StreamFetcher(hs.streams, self.http_client),
            clock=hs.clock,
            written_streams=self.written_streams,
            caches_writer=self.invalidator,
        )
        for name, listener in self._listeners:
            handler.add_listener(name, listener)
        self.handler = handler
        hs.data_handler.set_position(
            CachesStream.NAME, hs.instance_name, self.invalidator.current_token()
        )
        await handler.load_stored_positions()

    async def start(self) -> None:
        hs = self.hs
        await self.prepare()
        handler = self.handler
        assert handler is not None
        handler.attach(self.connection)
        hs.publisher.bus = handler
        await self.connection.start()
        await handler.wait_for_writers(self.expected_writers(), self.startup_timeout)
        self._prune_loop = hs.clock.looping_call(self._prune, 3600.0)
        self._ping_loop = hs.clock.looping_call(
            self._ping, hs.config.replication_ping_interval, now=True
        )

    def _ping(self) -> None:
        self.send_command(PingCommand(self.hs.clock.time_msec(), self.hs.instance_name))

    async def _prune(self) -> None:
        await self.invalidator.prune(self.hs.clock.time_msec() - CACHES_RETENTION_MS)

    async def stop(self) -> None:
        for loop in (self._prune_loop, self._ping_loop):
            if loop is not None and loop.running:
                loop.stop()
        if self.hs.publisher.bus is self.handler:
            self.hs.publisher.bus = None
        if self.handler is not None:
            # Let what is queued (a CLEAR_USER_SYNC, the last rows) go out first.
            await self.handler.wait_until_sent(timeout=5.0)
        await self.connection.stop()
        if self.http_client is not None:
            await self.http_client.close()


async def build_replication_service(hs: Any) -> ReplicationService | None:
    """The bus service for ``hs``, or None when this process is alone (see module doc)."""
    shared_bus = getattr(hs, "replication_bus", None)
    connection: BusConnection
    if shared_bus is not None:
        connection = shared_bus.connect()
    elif hs.config.redis_url:
        channel = hs.config.redis_channel or default_channel(hs.server_name)
        connection = RedisBus(
            hs.config.redis_url, channel, f"atrium-{hs.instance_name}", reactor=hs.reactor
        )
    else:
        return None
    invalidator = await ReplicatingCacheInvalidator.create(
        hs.invalidator, hs.db, hs.instance_name, hs.clock
    )
    return ReplicationService(hs, connection, invalidator)
