"""The composition root: builds one process's object graph from its config.

This is the only place that knows which role a process plays. Handlers and
servlets receive their collaborators from here; a worker differs from the
master only in which collaborators it gets (a local event writer or a client
of a remote one) and which route groups it serves.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet.interfaces import IListeningPort

from atrium.app.routes import groups_for_app
from atrium.config.homeserver import HomeServerConfig
from atrium.crypto.keys import read_signing_key_file
from atrium.handlers.auth import AuthHandler
from atrium.handlers.devices import DeviceHandler
from atrium.handlers.registration import InteractiveAuth, RegistrationHandler
from atrium.http.server import JsonResource, Router
from atrium.http.site import AtriumSite
from atrium.storage.database import DatabasePool
from atrium.storage.engines import create_engine
from atrium.storage.migrations import prepare_database
from atrium.storage.stores.accounts import AccountStore
from atrium.util.caches.registry import CacheRegistry, register_store_caches
from atrium.util.clock import Clock
from atrium.util.ratelimit import Ratelimiter

logger = logging.getLogger(__name__)


class Stores:
    """The read/write stores of one process, per domain."""

    def __init__(self, db: DatabasePool) -> None:
        self.accounts = AccountStore(db)

    def all(self) -> list[Any]:
        return [v for v in vars(self).values() if v is not None]


class HomeServer:
    """One Atrium process: config, database, stores, handlers and HTTP routes."""

    def __init__(self, config: HomeServerConfig, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        self.clock = Clock(reactor)
        self.server_name = config.server_name
        self.instance_name = config.instance_name
        self.router = Router()
        self.cache_registry = CacheRegistry()
        self.signing_key = read_signing_key_file(config.signing_key_path)[0]
        self.db: DatabasePool | None = None
        self._ports: list[IListeningPort] = []
        # Long-running things with async start()/stop(), started in order.
        self._services: list[Any] = []

    def is_mine(self, user_or_room_id: str) -> bool:
        return user_or_room_id.split(":", 1)[-1] == self.server_name

    # -- building ------------------------------------------------------------
    async def setup(self, allow_migrate: bool = True) -> None:
        config = self.config
        self.db = DatabasePool(
            create_engine(config.database_url),
            self.reactor,
            max_connections=config.database_max_connections,
        )
        self.db.start()
        await prepare_database(self.db, allow_migrate=allow_migrate)
        self.stores = Stores(self.db)
        for store in self.stores.all():
            register_store_caches(self.cache_registry, store)
        self._build_handlers()
        self._register_servlets()

    def _build_handlers(self) -> None:
        config, clock = self.config, self.clock
        rl_enabled = config.rate_limits_enabled
        self.ratelimit_login = Ratelimiter(
            clock,
            config.rate_limit_login.per_second,
            config.rate_limit_login.burst_count,
            rl_enabled,
        )
        self.ratelimit_registration = Ratelimiter(
            clock,
            config.rate_limit_registration.per_second,
            config.rate_limit_registration.burst_count,
            rl_enabled,
        )
        self.ratelimit_message = Ratelimiter(
            clock,
            config.rate_limit_message.per_second,
            config.rate_limit_message.burst_count,
            rl_enabled,
        )
        self.auth = AuthHandler(self.stores.accounts, clock, self.server_name)
        self.uia = InteractiveAuth(self.auth, clock)
        self.registration = RegistrationHandler(
            self.stores.accounts,
            self.auth,
            self.uia,
            clock,
            self.server_name,
            config.enable_registration,
        )
        self.devices = DeviceHandler(self.stores.accounts)

    def _register_servlets(self) -> None:
        from atrium.api.client import account, meta

        for module in (meta, account):
            module.register_servlets(self, self.router)

    # -- running ---------------------------------------------------------------
    async def start(self) -> None:
        """Start background services (replication, queues) once set up."""
        for service in self._services:
            await service.start()

    def start_listening(self) -> list[IListeningPort]:
        groups = groups_for_app(self.config.worker_app)
        for listener in self.config.listeners:
            if listener.type == "metrics":
                from prometheus_client.twisted import MetricsResource
                from twisted.web.resource import Resource
                from twisted.web.server import Site

                root = Resource()
                root.putChild(b"metrics", MetricsResource())
                site: Any = Site(root)
            else:
                site = AtriumSite(JsonResource(self.router, groups), self.config.max_request_size)
            for address in listener.bind_addresses:
                port = self.reactor.listenTCP(listener.port, site, interface=address)
                self._ports.append(port)
                logger.info("listening on %s:%d", address, port.getHost().port)
        return self._ports

    async def stop(self) -> None:
        for port in self._ports:
            await port.stopListening()
        self._ports.clear()
        for service in reversed(self._services):
            await service.stop()
        if self.db is not None:
            self.db.close()
