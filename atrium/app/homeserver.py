"""The composition root: builds one process's object graph from its config.

This is the only place that knows which role a process plays. Handlers and
servlets receive their collaborators from here; a worker differs from the
master only in which collaborators it gets (a local event writer or a client
of a remote one) and which route groups it serves.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort

from atrium.app.routes import groups_for_app, register_servlets
from atrium.config.homeserver import HomeServerConfig
from atrium.crypto.keys import read_signing_key_file
from atrium.handlers.admin import AdminHandler
from atrium.handlers.auth import AuthHandler
from atrium.handlers.cross_signing import CrossSigningHandler
from atrium.handlers.devices import DeviceHandler
from atrium.handlers.directory import DirectoryHandler
from atrium.handlers.e2e_keys import E2eKeysHandler
from atrium.handlers.event_creation import EventCreationHandler
from atrium.handlers.event_writer import (
    SEND_EVENTS_ENDPOINT,
    LocalEventWriter,
    RoutingEventSender,
    SendEventsEndpoint,
)
from atrium.handlers.membership import RoomMemberHandler
from atrium.handlers.pagination import PaginationHandler
from atrium.handlers.pushers import PushersHandler
from atrium.handlers.redaction import RedactionHandler
from atrium.handlers.registration import InteractiveAuth, RegistrationHandler
from atrium.handlers.room_access import RoomAccessChecker
from atrium.handlers.room_creation import RoomCreationHandler
from atrium.handlers.room_keys import RoomKeysHandler
from atrium.handlers.room_read import RoomReadHandler
from atrium.handlers.to_device import ToDeviceHandler
from atrium.handlers.voip import TurnHandler
from atrium.http.server import JsonResource, Router
from atrium.http.site import AtriumSite
from atrium.replication.handler import ReplicationDataHandler
from atrium.replication.http import register_replication_endpoint
from atrium.replication.publisher import StreamPublisher
from atrium.replication.streams import STREAMS
from atrium.state.context import StateResolver
from atrium.storage.database import DatabasePool
from atrium.storage.engines import create_engine
from atrium.storage.migrations import prepare_database
from atrium.storage.persistence import build_event_persister
from atrium.storage.stores import LocalCacheInvalidator, build_stores
from atrium.storage.stores.accounts import AccountStore
from atrium.storage.stores.device_lists import DeviceListStore
from atrium.storage.stores.directory import DirectoryStore
from atrium.storage.stores.e2e_keys import E2eKeysStore
from atrium.storage.stores.pagination import PaginationStore
from atrium.storage.stores.pushers import PUSHERS_CHANGED, PusherStore
from atrium.storage.stores.room_keys import RoomKeysStore
from atrium.storage.stores.to_device import ToDeviceStore
from atrium.sync.e2ee import DeviceListsSection, KeyCountsSection, ToDeviceSection
from atrium.sync.notifier import Notifier
from atrium.sync.token import STREAM_KEYS, RoomStreamToken, StreamToken
from atrium.util.caches.registry import CacheRegistry, register_store_caches
from atrium.util.clock import Clock
from atrium.util.ratelimit import Ratelimiter

logger = logging.getLogger(__name__)


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
        # /sync sections after the rooms part (atrium/sync/sections.py): each
        # domain appends its SyncSection here while the server is built.
        self.sync_sections: list[Any] = []
        # Federation services (wt/fed), built in setup() when enabled.
        self.federation: Any = None
        # The cache of remote users' device lists (with federation only).
        self.remote_device_lists: Any = None

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
        self.invalidator = LocalCacheInvalidator(self.cache_registry)
        # -- replication transport (wt/repl) ----------------------------------------
        # With other processes (redis.url set, or a test sharing an InProcessBus
        # through self.replication_bus) every invalidation is also a caches-stream
        # row, and a service joins the bus on start(). See atrium/replication/service.py.
        from atrium.replication import http as replication_http
        from atrium.replication.service import build_replication_service

        replication_http.register_servlets(self, self.router)
        self.replication = await build_replication_service(self)
        if self.replication is not None:
            # Same CacheInvalidator protocol as the local one it wraps.
            self.invalidator = self.replication.invalidator  # type: ignore[assignment]
            self._services.insert(0, self.replication)
        # -- end replication transport ------------------------------------------------
        writers = config.writers_for("events")
        self.stores = await build_stores(
            self.db,
            self.invalidator,
            multi_writer_instance=self.instance_name
            if len(writers) > 1 and self.instance_name in writers
            else None,
        )
        self.stores.register_caches(self.cache_registry)
        # Stores outside the event domain: one per domain, registered the same way.
        self.accounts = AccountStore(self.db, self.invalidator)
        self.directory = DirectoryStore(self.db, self.invalidator)
        for store in (self.accounts, self.directory):
            register_store_caches(self.cache_registry, store)
        # -- E2EE stores: keys, to-device inboxes, device-list stream ----------
        # (the two stream stores' id generators are only valid on the
        # to_device / device_lists writer, the master for now).
        self.e2e_keys_store = E2eKeysStore(self.db)
        self.room_keys_store = RoomKeysStore(self.db)
        self.to_device_store = await ToDeviceStore.create(self.db)
        self.device_lists_store = await DeviceListStore.create(self.db)
        # -- room reads and directory: timeline pagination queries (wt/reads) --
        self.pagination_store = PaginationStore(self.db)
        await self._build_user_data_stores()
        self._build_replication()
        if self.replication is not None:
            # Every writer's stored position, before anything reads positions.
            await self.replication.prepare()
        self._build_handlers()
        self._build_sync()
        self._build_user_data_handlers()
        self._build_pusher_service()
        self._build_user_sync()
        self._add_e2ee_sync_sections()
        self._build_federation()
        self._register_servlets()

    def _build_replication(self) -> None:
        self.streams = {name: cls(self) for name, cls in STREAMS.items()}
        self.notifier = Notifier(self.clock, self.current_token)
        self.data_handler = ReplicationDataHandler(
            self.streams, self.cache_registry.invalidate, self.notifier
        )
        self.publisher = StreamPublisher(self.data_handler, self.instance_name)
        # Streams this process writes start at their stored positions.
        for name, stream in self.streams.items():
            if self.instance_name in self.config.writers_for(name):
                self.data_handler.set_position(
                    name, self.instance_name, stream.current_token(self.instance_name)
                )

    def current_token(self) -> StreamToken:
        """The position of every client-visible stream this process has applied.

        With several events writers the events position is a vector: the
        lowest writer position plus each writer ahead of it.
        """
        positions = self.data_handler
        writers = self.config.writers_for("events")
        if len(writers) == 1:
            room_token = RoomStreamToken(positions.get_position("events", writers[0]))
        else:
            by_writer = {w: positions.get_position("events", w) for w in writers}
            low = min(by_writer.values())
            room_token = RoomStreamToken(low, {w: p for w, p in by_writer.items() if p > low})
        return StreamToken(room_token, *(positions.max_position(key) for key in STREAM_KEYS[1:]))

    async def wait_for_events_position(self, writer: str, token: int) -> None:
        await self.data_handler.wait_for_position("events", writer, token)

    async def wait_for_stream_token(self, token: StreamToken, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until this process has applied
        everything ``token`` covers; whether it has.

        A client's token may come from another process that was further
        along (its previous /sync went to another sync worker).
        """
        targets = [
            ("events", writer, token.events.position_of(writer))
            for writer in self.config.writers_for("events")
        ]
        targets += [
            (key, self.config.writers_for(key)[0], int(token.get(key))) for key in STREAM_KEYS[1:]
        ]
        deadline = self.clock.time() + timeout
        for stream, writer, position in targets:
            remaining = deadline - self.clock.time()
            if self.data_handler.get_position(stream, writer) >= position:
                continue
            if remaining <= 0:
                return False
            waiting = defer.ensureDeferred(
                self.data_handler.wait_for_position(stream, writer, position)
            )
            waiting.addTimeout(remaining, self.reactor)
            try:
                await waiting
            except (defer.TimeoutError, defer.CancelledError):
                return False
        return True

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
        self.auth = AuthHandler(self.accounts, clock, self.server_name)
        self.uia = InteractiveAuth(self.auth, clock)
        self.registration = RegistrationHandler(
            self.accounts, self.auth, self.uia, clock, self.server_name, config.enable_registration
        )
        self._build_e2ee_handlers()

        self.resolver = StateResolver(self.stores.events, self.stores.state)
        self.event_sender = self._build_event_sender()
        self.event_creation = EventCreationHandler(
            stores=self.stores,
            resolver=self.resolver,
            sender=self.event_sender,
            clock=clock,
            server_name=self.server_name,
            signing_key=self.signing_key,
            wait_for_position=self.wait_for_events_position,
        )
        self.room_members = RoomMemberHandler(
            stores=self.stores,
            accounts=self.accounts,
            directory=self.directory,
            creation=self.event_creation,
            server_name=self.server_name,
        )
        self.room_creation = RoomCreationHandler(
            stores=self.stores,
            accounts=self.accounts,
            directory=self.directory,
            creation=self.event_creation,
            members=self.room_members,
            server_name=self.server_name,
        )
        self.redactions = RedactionHandler(self.stores)
        self._build_read_handlers()

    def _build_read_handlers(self) -> None:
        """Room reads (/messages, /context, state, members) and the room directory."""
        self.room_access = RoomAccessChecker(self.stores, self.pagination_store)
        self.pagination = PaginationHandler(
            stores=self.stores,
            pagination=self.pagination_store,
            access=self.room_access,
            clock=self.clock,
        )
        self.room_reads = RoomReadHandler(
            stores=self.stores,
            pagination_store=self.pagination_store,
            access=self.room_access,
            pagination=self.pagination,
        )
        self.directory_handler = DirectoryHandler(
            stores=self.stores,
            directory=self.directory,
            access=self.room_access,
            server_name=self.server_name,
        )

    # -- /sync and filters (atrium/sync/) --------------------------------------------
    def _build_sync(self) -> None:
        from atrium.storage.stores.filters import FilterStore
        from atrium.storage.stores.stream import StreamStore
        from atrium.sync.change_cache import SyncChangeTracker
        from atrium.sync.handler import SyncHandler
        from atrium.sync.rooms import RoomsBuilder

        self.filters = FilterStore(self.db)
        self.stream_store = StreamStore(self.db, self.stores.state)
        for store in (self.filters, self.stream_store):
            register_store_caches(self.cache_registry, store)
        # Room summaries change exactly when member counts do.
        summary = self.stream_store.get_room_summary
        self.cache_registry.register(
            "get_membership_counts", summary.invalidate, summary.invalidate_all
        )
        self.sync_tracker = SyncChangeTracker(self.current_token().events.max_position)
        self.notifier.add_observer(self.sync_tracker.on_new_data)
        rooms = RoomsBuilder(
            stores=self.stores,
            stream=self.stream_store,
            directory=self.directory,
            tracker=self.sync_tracker,
            clock=self.clock,
        )
        self.sync_handler = SyncHandler(
            rooms=rooms,
            filters=self.filters,
            notifier=self.notifier,
            current_token=self.current_token,
            get_joined_rooms=self.stores.members.get_rooms_for_user,
            sections=self.sync_sections,
            wait_for_token=self.wait_for_stream_token,
        )

    # -- user data & ephemeral: typing, receipts, account data, push rules,
    # -- presence, profile ---------------------------------------------------------
    async def _build_user_data_stores(self) -> None:
        """Stores (and the in-memory typing state) whose positions the streams report."""
        from atrium.handlers.typing import TypingHandler
        from atrium.storage.stores.account_data import AccountDataStore
        from atrium.storage.stores.event_push_actions import EventPushActionsStore
        from atrium.storage.stores.presence import PresenceStore
        from atrium.storage.stores.push_rules import PushRulesStore
        from atrium.storage.stores.receipts import ReceiptsStore

        assert self.db is not None
        self.account_data_store = await AccountDataStore.create(self.db, self.invalidator)
        self.receipts_store = await ReceiptsStore.create(self.db)
        self.presence_store = await PresenceStore.create(self.db, self.invalidator)
        self.push_rules_store = PushRulesStore(self.db, self.account_data_store, self.invalidator)
        self.push_actions_store = EventPushActionsStore(self.db)
        for store in (
            self.account_data_store,
            self.receipts_store,
            self.presence_store,
            self.push_rules_store,
        ):
            register_store_caches(self.cache_registry, store)
        # Built before the replication spine (which asks it for the typing
        # position); publishing goes through the publisher built just after.
        self.typing = TypingHandler(
            self.clock, self._is_joined, lambda *args: self.publisher.publish(*args)
        )

    async def _is_joined(self, user_id: str, room_id: str) -> bool:
        return user_id in await self.stores.members.get_users_in_room(room_id)

    async def _user_exists(self, user_id: str) -> bool:
        return self.is_mine(user_id) and await self.accounts.get_user(user_id) is not None

    def _build_user_data_handlers(self) -> None:
        from atrium.handlers.account_data import AccountDataHandler
        from atrium.handlers.presence import PresenceHandler
        from atrium.handlers.profile import ProfileHandler
        from atrium.handlers.push_rules import PushRulesHandler
        from atrium.handlers.receipts import ReceiptsHandler
        from atrium.sync.sections_ephemeral import ReceiptsSection, TypingSection
        from atrium.sync.sections_unread import UnreadCountsSection
        from atrium.sync.sections_user_data import AccountDataSection, PresenceSection

        publish = self.publisher.publish
        self.push_rules = PushRulesHandler(self.push_rules_store, publish)
        self.account_data = AccountDataHandler(self.account_data_store, publish, self.push_rules)
        self.receipts = ReceiptsHandler(
            self.receipts_store,
            self.stores.events,
            self._is_joined,
            self.account_data,
            self.clock,
            publish,
        )
        self.presence = PresenceHandler(
            self.presence_store, self.stores.members, self._user_exists, self.clock, publish
        )
        self.profile = ProfileHandler(
            self.accounts, self.stores.members, self.room_members, self.is_mine
        )
        self.sync_sections.extend(
            [
                AccountDataSection(self.account_data_store, self.push_rules),
                PresenceSection(self.presence_store, self.stores.members, self.clock),
                TypingSection(self.typing),
                ReceiptsSection(self.receipts_store),
                # After every section that may add a joined room's entry.
                UnreadCountsSection(self.push_actions_store),
            ]
        )

    def _build_pusher_service(self) -> None:
        """HTTP pushers send from one process only: the master (atrium/push/http_pusher.py)."""
        self.pusher_service = None
        if self.config.is_worker:
            return
        from atrium.push.http_pusher import PusherService

        self.pusher_service = PusherService(
            pushers=self.pushers.store,
            actions=self.push_actions_store,
            events=self.stores.events,
            members=self.stores.members,
            clock=self.clock,
            reactor=self.reactor,
            events_position=lambda: self.current_token().events.stream,
        )
        self.notifier.add_observer(self.pusher_service.on_new_data)
        # Pushers set or deleted on any process: re-read them (and only then).
        self.cache_registry.register(
            PUSHERS_CHANGED,
            lambda _key: self.pusher_service.pushers_changed(),
            self.pusher_service.pushers_changed,
        )
        self._services.append(self.pusher_service)

    # -- who is syncing where (presence): atrium/workers/, atrium/master/ ----------------
    def _build_user_sync(self) -> None:
        """``hs.user_sync`` reports /sync activity; the master tracks it for presence.

        A worker reports over the bus (USER_SYNC, CLEAR_USER_SYNC when it
        stops); the master reports to its own ``SyncingUsers`` directly and
        hears everybody else's commands (and PINGs, to find dead workers).
        """
        from atrium.workers.user_sync import UserSyncReporter

        if self.config.is_worker:
            assert self.replication is not None, "workers always replicate"
            self.user_sync = UserSyncReporter(
                self.instance_name, self.replication.send_command, self.clock
            )
            self.replication.add_listener("REPLICATE", self.user_sync.reannounce)
            # Stopped before the replication service: CLEAR_USER_SYNC goes out first.
            self._services.append(self.user_sync)
            return
        from atrium.master.syncing_users import SyncingUsers

        self.syncing_users = SyncingUsers(
            self.instance_name,
            self.clock,
            self.presence.set_syncing,
            timeout=self.config.replication_ping_timeout,
        )

        def tell_master(*commands: Any) -> defer.Deferred[None]:
            for command in commands:
                self.syncing_users.handle(command)
            return self.syncing_users.settled()

        # The master's own reporter is no service: stopping the master must
        # not mark its users offline (they come back when it restarts).
        self.user_sync = UserSyncReporter(self.instance_name, tell_master, self.clock)
        if self.replication is not None:
            for command_name in ("USER_SYNC", "CLEAR_USER_SYNC", "NAME", "PING"):
                self.replication.add_listener(command_name, self.syncing_users.handle)
        self._services.append(self.syncing_users)

    def _add_e2ee_sync_sections(self) -> None:
        self.sync_sections.extend(
            [
                ToDeviceSection(self.to_device_store),
                DeviceListsSection(self.devices),
                # Must stay last: it only adds counts to responses with content.
                KeyCountsSection(self.e2e_keys),
            ]
        )

    def _build_e2ee_handlers(self) -> None:
        """E2EE: devices and device lists, keys, cross-signing, to-device, /sync sections."""
        self.devices = DeviceHandler(
            self.accounts,
            device_lists=self.device_lists_store,
            e2e_keys=self.e2e_keys_store,
            to_device=self.to_device_store,
            members=self.stores.members,
            publisher=self.publisher,
            clock=self.clock,
            server_name=self.server_name,
            events_position=self.current_token().events.max_position,
        )
        self.cache_registry.register(
            "get_rooms_for_user_with_stream_ordering",
            self.devices.note_membership_invalidation,
            self.devices.note_membership_invalidation,
        )
        self.notifier.add_observer(self.devices.on_new_data)
        # Login and registration create devices through AuthHandler.login.
        self.auth.on_new_device = self.devices.notify_device_added
        self.e2e_keys = E2eKeysHandler(self.e2e_keys_store, self.devices, self.clock, self.is_mine)
        self.room_keys = RoomKeysHandler(self.room_keys_store)
        self.pushers = PushersHandler(
            PusherStore(self.db, self.invalidator),
            self.clock,
            lambda: self.current_token().events.max_position,
        )
        from atrium.handlers.notifications import NotificationsHandler

        self.notifications = NotificationsHandler(
            self.push_actions_store, self.stores.events, self.clock
        )
        config = self.config
        self.turn = TurnHandler(
            self.clock,
            config.turn_uris,
            config.turn_shared_secret,
            config.turn_username,
            config.turn_password,
            config.turn_user_lifetime_seconds,
        )
        self.cross_signing = CrossSigningHandler(
            self.e2e_keys_store, self.accounts, self.devices, self.uia, self.clock, self.is_mine
        )
        self.to_device = ToDeviceHandler(
            self.to_device_store, self.accounts, self.publisher, self.clock, self.is_mine
        )

    def _build_event_sender(self) -> Any:
        """Events go to the writer owning their room: here, or over HTTP."""
        writers = self.config.writers_for("events")
        local = None
        if self.instance_name in writers:
            from atrium.push.bulk import BulkPushRuleEvaluator

            persister = build_event_persister(
                self.stores,
                clock=self.clock,
                instance_name=self.instance_name,
                is_mine=self.is_mine,
                push_evaluator=BulkPushRuleEvaluator(
                    self.stores.members, self.stores.events, self.push_rules_store, self.is_mine
                ),
            )
            local = LocalEventWriter(persister, self.publisher, self.instance_name)
            endpoint = SendEventsEndpoint(local, self.stores.state, self.resolver)
            register_replication_endpoint(self, self.router, SEND_EVENTS_ENDPOINT, endpoint.handle)
            id_gen = self.stores.events.stream_id_gen
            if len(writers) > 1 and hasattr(id_gen, "advance_idle"):
                from atrium.workers.idle_writer import IdleWriterAdvancer

                # A quiet writer must not hold every client token's minimum back.
                self._services.append(IdleWriterAdvancer(local, id_gen, self.clock))
        return RoutingEventSender(
            self.instance_name, writers, local, self._call_replication_endpoint
        )

    async def _call_replication_endpoint(
        self, instance: str, name: str, body: dict[str, Any]
    ) -> Any:
        if self.replication is None or self.replication.http_client is None:
            raise RuntimeError(f"no replication client to reach {instance}")
        return await self.replication.http_client.call_endpoint(
            instance, name, body, clock=self.clock
        )

    # -- federation (wt/fed): keys, request signing, inbound /send, reads, sender --
    def _build_federation(self) -> None:
        """``self.federation`` (atrium/federation/services.py), or None when off.

        Tests may set ``self.federation_options`` before setup() (HTTP client
        options such as ``well_known_port``).
        """
        from atrium.federation.services import build_federation

        self.federation = build_federation(self, **getattr(self, "federation_options", {}))
        if self.federation is not None:
            self._services.append(self.federation)
            from atrium.handlers.e2e_keys_remote import RemoteE2eKeys

            self.e2e_keys.remote = RemoteE2eKeys(self.federation.client)
            self._build_remote_device_lists()
            from atrium.handlers.federation_backfill import BackfillHandler

            self.pagination.backfill = BackfillHandler(
                stores=self.stores,
                events=self.federation.events,
                client=self.federation.client,
                clock=self.clock,
                server_name=self.server_name,
            )
            # Joins, leaves and invites this server cannot do alone.
            self.room_members.remote = self.federation.remote_membership

    def _build_remote_device_lists(self) -> None:
        """The cache of remote device lists (handlers/remote_device_lists.py)."""
        from atrium.handlers.remote_device_lists import RemoteDeviceLists
        from atrium.storage.stores.remote_device_lists import RemoteDeviceListStore

        cache = RemoteDeviceLists(
            store=RemoteDeviceListStore(self.db),
            members=self.stores.members,
            devices=self.devices,
            client=self.federation.client,
            clock=self.clock,
            server_name=self.server_name,
        )
        self.remote_device_lists = self.e2e_keys.remote_device_lists = cache
        if self.federation.sender is not None:
            # One kind of process marks users we stop sharing rooms with as
            # stale: the one(s) sending federation traffic.
            self.cache_registry.register(
                "get_rooms_for_user_with_stream_ordering",
                cache.note_membership_change,
                cache.note_membership_change,
            )
            self.notifier.add_observer(cache.on_new_data)
            self._services.append(cache)

    def _start_federation_listener(self) -> None:
        """The TLS listener for other servers: on the master, federation routes only."""
        if self.federation is None or self.config.is_worker:
            return
        self._ports.extend(self.federation.listen(self.router))

    # -- end federation --------------------------------------------------------------

    def _register_servlets(self) -> None:
        # -- admin API --
        self.admin = AdminHandler(
            stores=self.stores,
            accounts=self.accounts,
            devices=self.devices,
            room_members=self.room_members,
            server_name=self.server_name,
        )
        register_servlets(self, self.router, federation=self.federation is not None)

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
                site = AtriumSite(
                    JsonResource(self.router, groups),
                    self.config.max_request_size,
                    x_forwarded=listener.x_forwarded,
                )
            for address in listener.bind_addresses:
                port = self.reactor.listenTCP(listener.port, site, interface=address)
                self._ports.append(port)
                logger.info("listening on %s:%d", address, port.getHost().port)
        self._start_federation_listener()
        return self._ports

    async def stop(self) -> None:
        for port in self._ports:
            await port.stopListening()
        self._ports.clear()
        for service in reversed(self._services):
            await service.stop()
        if self.db is not None:
            self.db.close()
