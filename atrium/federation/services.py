"""Federation's part of the object graph, built by the composition root.

``build_federation(hs)`` is called from ``HomeServer.setup`` once the stores
and handlers exist, and returns ``None`` when federation is off (no
``federation:`` section). Otherwise ``hs.federation`` holds:
- ``client`` (FederationHttpClient), ``keyring``, ``authenticator``;
- inbound handlers: ``events``, ``edus``, ``transactions``, ``reads``, ``queries``,
  ``membership`` (make/send_join, make/send_leave, invite);
- ``remote_membership``: our users joining, leaving and inviting on other
  servers (what RoomMemberHandler delegates to);
- ``sender``: the outbound queues, only on the instances listed in
  ``federation.sender_instances`` (the master by default), else None.
It is a service: ``start`` starts the sender and listens for
REMOTE_SERVER_UP; ``listen`` opens the TLS federation listener (master only).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IListeningPort, ILoggingContext, IProtocolFactory
from zope.interface import implementer_only

from atrium.federation.client import FederationHttpClient
from atrium.federation.config import FederationConfig, federation_config_of
from atrium.federation.keyring import Keyring
from atrium.federation.request_auth import RequestAuthenticator
from atrium.federation.sender import FederationSender
from atrium.federation.store import FederationStore
from atrium.federation.tls import (
    generate_self_signed_certificate,
    host_of_server_name,
    server_tls_options,
)
from atrium.handlers.federation_edu import (
    EDU_STREAMS,
    FEDERATION_EDUS_ENDPOINT,
    FederationEduHandler,
)
from atrium.handlers.federation_event import FederationEventHandler
from atrium.handlers.federation_membership import FederationMembershipHandler
from atrium.handlers.federation_query import FederationQueryHandler
from atrium.handlers.federation_read import FederationReadHandler
from atrium.handlers.federation_transaction import TransactionHandler
from atrium.handlers.remote_membership import RemoteMembershipHandler
from atrium.http.server import JsonResource
from atrium.http.site import AtriumSite
from atrium.replication.http import register_replication_endpoint

logger = logging.getLogger(__name__)

# The route groups the federation listener serves.
FEDERATION_GROUPS = frozenset({"federation", "federation_keys"})
# At most one REMOTE_SERVER_UP per remote server per this long.
SERVER_UP_INTERVAL_MS = 60_000


@implementer_only(IProtocolFactory, ILoggingContext)
class FederationSite(AtriumSite):
    """The federation listener's site, speaking HTTP/1.1 only.

    It does not offer ALPN negotiation: Twisted would set the protocols on
    the shared TLS context for every connection, which pyOpenSSL refuses
    once the context has made a connection.
    """


class FederationServices:
    def __init__(self, hs: Any, config: FederationConfig, **options: Any) -> None:
        self.hs = hs
        self.config = config
        self.store = FederationStore(hs.db)
        self.client = FederationHttpClient(
            hs.reactor, hs.clock, hs.server_name, hs.signing_key, config, **options
        )
        self.keyring = Keyring(
            store=self.store,
            client=self.client,
            clock=hs.clock,
            server_name=hs.server_name,
            signing_key=hs.signing_key,
            old_verify_keys=tuple((k.key_id, k.key, k.expired_ts) for k in config.old_verify_keys),
            trusted_key_servers=config.trusted_key_servers,
        )
        self.authenticator = RequestAuthenticator(hs.server_name, self.keyring.get_request_key)
        self.events = FederationEventHandler(
            stores=hs.stores,
            resolver=hs.resolver,
            sender=hs.event_sender,
            keyring=self.keyring,
            client=self.client,
            server_name=hs.server_name,
        )
        self.edus = FederationEduHandler(
            hs, writer_for_stream=self._writer_for_stream, forward=self._forward_edus
        )
        if any(self._writer_for_stream(s) == hs.instance_name for s in EDU_STREAMS.values()):
            # Other processes (federation_reader workers) hand us their EDUs.
            register_replication_endpoint(
                hs, hs.router, FEDERATION_EDUS_ENDPOINT, self.edus.handle_forwarded
            )
        self.transactions = TransactionHandler(
            store=self.store, events=self.events, edus=self.edus, clock=hs.clock
        )
        self.reads = FederationReadHandler(
            stores=hs.stores, resolver=hs.resolver, clock=hs.clock, server_name=hs.server_name
        )
        self.queries = FederationQueryHandler(
            stores=hs.stores,
            accounts=hs.accounts,
            directory=hs.directory,
            profile=hs.profile,
            e2e_keys=hs.e2e_keys,
            e2e_keys_store=hs.e2e_keys_store,
            federation_store=self.store,
            is_mine=hs.is_mine,
            server_name=hs.server_name,
        )
        self.membership = FederationMembershipHandler(
            stores=hs.stores,
            accounts=hs.accounts,
            creation=hs.event_creation,
            events=self.events,
            reads=self.reads,
            keyring=self.keyring,
            event_sender=hs.event_sender,
            server_name=hs.server_name,
            signing_key=hs.signing_key,
        )
        self.remote_membership = RemoteMembershipHandler(
            stores=hs.stores,
            client=self.client,
            keyring=self.keyring,
            events=self.events,
            creation=hs.event_creation,
            clock=hs.clock,
            server_name=hs.server_name,
            signing_key=hs.signing_key,
        )
        self.sender: FederationSender | None = None
        if hs.instance_name in config.sender_instances:
            self.sender = self.build_sender()
        self._server_up_sent: dict[str, int] = {}
        self._prune_loop: Any = None

    def build_sender(self) -> FederationSender:
        """A new (not started) federation sender for this process."""
        return FederationSender(
            hs=self.hs,
            client=self.client,
            store=self.store,
            clock=self.hs.clock,
            server_name=self.hs.server_name,
            instance_name=self.hs.instance_name,
            sender_instances=self.config.sender_instances,
        )

    # -- EDUs received by a process that does not write their streams ------------------------------
    def _writer_for_stream(self, stream: str) -> str:
        return self.hs.config.writers_for(stream)[0]

    async def _forward_edus(
        self, writer: str, origin: str, txn_id: str, edus: list[dict[str, Any]]
    ) -> None:
        replication = getattr(self.hs, "replication", None)
        if replication is None or replication.http_client is None:
            raise RuntimeError(f"no replication client to reach {writer}")
        # The origin's transaction ID: a retry of the transaction after a lost
        # answer is not applied twice by the writer.
        await replication.http_client.call_endpoint(
            writer,
            FEDERATION_EDUS_ENDPOINT,
            {"origin": origin, "edus": edus},
            clock=self.hs.clock,
            txn_id=hashlib.sha256(f"{origin}\0{txn_id}".encode()).hexdigest(),
        )

    # -- REMOTE_SERVER_UP ----------------------------------------------------------------------
    def on_remote_request(self, origin: str) -> None:
        """A validly signed request came from ``origin``: it is up."""
        if self.sender is not None:
            self.sender.wake_destination(origin)
        replication = getattr(self.hs, "replication", None)
        if replication is None or replication.handler is None:
            return
        now = self.hs.clock.time_msec()
        if now - self._server_up_sent.get(origin, -SERVER_UP_INTERVAL_MS) < SERVER_UP_INTERVAL_MS:
            return
        self._server_up_sent[origin] = now
        from atrium.replication.commands import RemoteServerUpCommand

        try:
            replication.handler.send_command(RemoteServerUpCommand(origin))
        except Exception:
            logger.exception("Could not announce REMOTE_SERVER_UP %s", origin)

    def _on_server_up_command(self, command: Any) -> None:
        if self.sender is not None:
            self.sender.wake_destination(command.server_name)

    # -- service ----------------------------------------------------------------------------------
    async def start(self) -> None:
        replication = getattr(self.hs, "replication", None)
        if replication is not None:
            replication.add_listener("REMOTE_SERVER_UP", self._on_server_up_command)
        if self.sender is not None:
            await self.sender.start()
        self._prune_loop = self.hs.clock.looping_call(self.transactions.prune, 3600.0)

    async def stop(self) -> None:
        if self._prune_loop is not None and self._prune_loop.running:
            self._prune_loop.stop()
        if self.sender is not None:
            await self.sender.stop()
        await self.client.close()

    def listen(self, router: Any) -> list[IListeningPort]:
        """The TLS listener other servers connect to (federation routes only)."""
        cert, key = ensure_certificate(self.config, self.hs.config.data_dir, self.hs.server_name)
        options = server_tls_options(cert, key)
        site = FederationSite(
            JsonResource(router, FEDERATION_GROUPS), self.hs.config.max_request_size
        )
        ports = []
        for address in self.config.bind_addresses:
            port = self.hs.reactor.listenSSL(self.config.port, site, options, interface=address)
            logger.info("federation listening on %s:%d (TLS)", address, port.getHost().port)
            ports.append(port)
        return ports


def ensure_certificate(
    config: FederationConfig, data_dir: Path, server_name: str
) -> tuple[Path, Path]:
    """The listener's certificate and key paths, making a self-signed pair if none is set."""
    if config.tls_certificate_path is not None and config.tls_private_key_path is not None:
        return config.tls_certificate_path, config.tls_private_key_path
    cert, key = Path(data_dir) / "federation.crt", Path(data_dir) / "federation.key"
    if not cert.exists() or not key.exists():
        generate_self_signed_certificate(host_of_server_name(server_name), cert, key)
    return cert, key


def build_federation(hs: Any, **options: Any) -> FederationServices | None:
    """The federation services of ``hs``, or None when federation is off.

    ``options`` go to the HTTP client (tests: ``well_known_port``,
    ``host_resolver``).
    """
    config = federation_config_of(hs.config)
    if not config.enabled:
        return None
    return FederationServices(hs, config, **options)
