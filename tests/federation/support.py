"""Federating homeservers for tests: real TLS listeners on loopback, each
with its own server name (``localhost:<federation port>``), and helpers to
build events signed as one of them.

Servers are configured exactly as ``atrium generate-config --federation-port
P --federation-skip-verify --federation-allow-private-ips`` would: loopback
needs allow_private_ips, and the self-signed certificates need skip-verify
(or each other's certificate as ca_file).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import yaml

from atrium.auth.rules import selected_auth_types
from atrium.config.generate import generate_config
from atrium.config.homeserver import load_config
from atrium.events.builder import build_event
from atrium.events.event import Event
from tests.support.client import JsonClient
from tests.support.db import create_postgres_database, drop_postgres_database
from tests.support.process import free_port

FED_V1 = "/_matrix/federation/v1"
CLIENT_V3 = "/_matrix/client/v3"


@attrs.define
class FedServer:
    hs: Any
    anon: JsonClient
    fed_port: int
    config_path: Path

    @property
    def name(self) -> str:
        return self.hs.server_name


def federation_section(fed_port: int) -> dict[str, Any]:
    """The federation config of a test server on loopback with a self-signed certificate."""
    return {
        "port": fed_port,
        "tls_certificate_path": None,
        "tls_private_key_path": None,
        "verify_certificates": False,
        "allow_private_ips": True,
    }


@asynccontextmanager
async def federating_server(
    tmp_path: Path,
    label: str,
    db_kind: str = "sqlite",
    postgres_server: str = "",
    *,
    federation: dict[str, Any] | None = None,
    fed_port: int | None = None,
    federation_options: dict[str, Any] | None = None,
    start: bool = True,
    replication_bus: Any = None,
    overrides: dict[str, Any] | None = None,
) -> AsyncIterator[FedServer]:
    """A running Atrium with federation enabled (TLS on ``fed_port``)."""
    from twisted.internet import reactor

    from atrium.app.homeserver import HomeServer

    fed_port = fed_port or free_port()
    server_name = f"localhost:{fed_port}"
    db_url = create_postgres_database(postgres_server) if db_kind == "postgres" else None
    section = federation_section(fed_port)
    section.update(federation or {})
    config_path, _ = generate_config(
        tmp_path / f"hs-{label}",
        server_name,
        database_url=db_url,
        http_port=0,
        enable_registration=True,
        federation=section,
    )
    data = yaml.safe_load(config_path.read_text())
    data.setdefault("rate_limits", {})["enabled"] = False
    data.update(overrides or {})
    config_path.write_text(yaml.safe_dump(data))
    hs = HomeServer(load_config([str(config_path)]), reactor)
    if federation_options:
        hs.federation_options = federation_options
    if replication_bus is not None:
        hs.replication_bus = replication_bus
    try:
        await hs.setup()
        if start:
            await hs.start()
        ports = hs.start_listening()
        http_port = ports[0].getHost().port
        yield FedServer(hs, JsonClient(f"http://127.0.0.1:{http_port}"), fed_port, config_path)
    finally:
        await hs.stop()
        if db_url is not None:
            drop_postgres_database(postgres_server, db_url)


async def build_remote_event(
    resident: Any,
    origin: Any,
    room_id: str,
    sender: str,
    event_type: str,
    content: dict[str, Any],
    *,
    state_key: str | None = None,
    prev_event_ids: Sequence[str] | None = None,
    auth_from_state: dict[tuple[str, str], str] | None = None,
) -> Event:
    """An event of ``origin``'s user, signed by ``origin``, built on the DAG of
    ``resident`` (what make_join would give a joining server).

    prev_events default to the resident's forward extremities and auth events
    are selected from its current state (or ``auth_from_state``).
    """
    stores = resident.stores
    room_version = await stores.rooms.get_room_version(room_id)
    if prev_event_ids is None:
        prev_event_ids = sorted(await stores.events.get_latest_event_ids_in_room(room_id))
    state = auth_from_state
    if state is None:
        state = dict(await stores.members.get_current_state_ids(room_id))
    draft = build_event(
        room_version=room_version,
        type=event_type,
        sender=sender,
        room_id=room_id,
        content=content,
        state_key=state_key,
        prev_event_ids=list(prev_event_ids),
        auth_event_ids=[],
        depth=1,
        origin_server_ts=origin.clock.time_msec(),
        server_name=origin.server_name,
        signing_key=origin.signing_key,
    )
    auth_ids = [state[k] for k in selected_auth_types(room_version, draft) if k in state]
    depth = await stores.events.get_max_depth_of(list(prev_event_ids)) + 1
    return build_event(
        room_version=room_version,
        type=event_type,
        sender=sender,
        room_id=room_id,
        content=content,
        state_key=state_key,
        prev_event_ids=list(prev_event_ids),
        auth_event_ids=auth_ids,
        depth=depth,
        origin_server_ts=origin.clock.time_msec(),
        server_name=origin.server_name,
        signing_key=origin.signing_key,
    )


async def send_transaction(
    origin: Any, destination: str, txn_id: str, pdus: Sequence[Any], edus: Sequence[Any] = ()
) -> Any:
    """A real signed PUT /send from ``origin`` to ``destination``."""
    return await origin.federation.client.put_json(
        destination,
        f"{FED_V1}/send/{txn_id}",
        {
            "origin": origin.server_name,
            "origin_server_ts": origin.clock.time_msec(),
            "pdus": [p.get_pdu_json() if isinstance(p, Event) else p for p in pdus],
            "edus": list(edus),
        },
    )


async def join_remote_room(
    resident: FedServer, joiner: FedServer, room_id: str, user_id: str
) -> Event:
    """``user_id`` of ``joiner`` joins a public room of ``resident``, over federation.

    A stand-in for make_join/send_join built from the first-half pieces: the
    join is built on the resident's DAG, signed by the joiner, delivered by a
    signed /send; the joiner then takes the state before its join from the
    resident (/state_ids + /event, stored as outliers) and persists the join.
    """
    join = await build_remote_event(
        resident.hs,
        joiner.hs,
        room_id,
        user_id,
        "m.room.member",
        {"membership": "join"},
        state_key=user_id,
    )
    answer = await send_transaction(joiner.hs, resident.name, f"join-{join.event_id}", [join])
    assert answer["pdus"][join.event_id] == {}, answer
    fed = joiner.hs.federation
    state = await fed.events.fetcher.fetch_state_before(
        resident.name, join.room_version, room_id, join.event_id
    )
    await fed.events.process_event(resident.name, join, state, check_soft_fail=False)
    return join


async def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll an async predicate until it returns something truthy."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    waited = 0.0
    while True:
        result = await predicate()
        if result:
            return result
        if waited >= timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await deferLater(reactor, interval, lambda: None)
        waited += interval


async def raw_federation_request(
    sender: Any,
    destination: str,
    method: str,
    uri: str,
    *,
    content: Any = None,
    authorization: Sequence[str] = (),
) -> tuple[int, Any]:
    """A request over the real TLS connection with exactly the given
    Authorization headers (none, forged...); returns (status, JSON body)."""
    import json

    from twisted.web.client import readBody
    from twisted.web.http_headers import Headers

    from tests.support.bytes_producer import BytesProducer

    client = sender.federation.client
    target = await client.resolver.resolve(destination)
    headers = Headers({b"Host": [target.host_header.encode()]})
    for value in authorization:
        headers.addRawHeader(b"Authorization", value.encode())
    body = None
    if content is not None:
        headers.addRawHeader(b"Content-Type", b"application/json")
        body = BytesProducer(json.dumps(content).encode())
    response = await client.agent.request(
        method.encode(), (target.base_url() + uri).encode(), headers, body
    )
    raw = await readBody(response)
    return response.code, (json.loads(raw) if raw else None)


def x_matrix(origin: str, destination: str, key: str, sig: str) -> str:
    return f'X-Matrix origin="{origin}",destination="{destination}",key="{key}",sig="{sig}"'


async def cut_off(server: FedServer) -> None:
    """Nobody reaches ``server`` over federation any more: its federation
    listener is closed, with the connections other servers had open to it,
    and it drops its own pooled connections."""
    from twisted.internet import reactor, tcp

    ports = [p for p in server.hs._ports if p.getHost().port == server.fed_port]
    for port in ports:
        await port.stopListening()
        server.hs._ports.remove(port)
    for selectable in list(reactor.getReaders()):
        if isinstance(selectable, tcp.Server) and selectable.server in ports:
            selectable.abortConnection()
    await server.hs.federation.client.close()


def reconnect(server: FedServer) -> None:
    """Undo ``cut_off``: the federation listener is back on the same port."""
    server.hs._ports.extend(server.hs.federation.listen(server.hs.router))


async def announce(origin: FedServer, destination: FedServer) -> None:
    """A signed request from ``origin``: ``destination`` stops backing off from it."""
    try:
        await origin.hs.federation.client.get_json(
            destination.name,
            f"{FED_V1}/query/profile",
            args={"user_id": f"@nobody:{destination.name}"},
        )
    except Exception:
        pass  # a 404 for the unknown user is an answer all the same


@asynccontextmanager
async def restarted(server: FedServer, federation_options: dict[str, Any] | None = None):
    """``server`` (stopped by the caller) started again from its config and
    database, on the same federation port; yields the new FedServer."""
    from twisted.internet import reactor

    from atrium.app.homeserver import HomeServer

    hs = HomeServer(load_config([str(server.config_path)]), reactor)
    if federation_options:
        hs.federation_options = federation_options
    try:
        await hs.setup()
        await hs.start()
        ports = hs.start_listening()
        http_port = ports[0].getHost().port
        yield FedServer(
            hs, JsonClient(f"http://127.0.0.1:{http_port}"), server.fed_port, server.config_path
        )
    finally:
        await hs.stop()


async def create_joined_room(a: FedServer, b: FedServer) -> tuple[Any, Any, str]:
    """(alice@A client, bob@B client, room_id): bob joined alice's public room."""
    alice = await a.anon.register("alice")
    bob = await b.anon.register("bob")
    created = await alice.post(f"{CLIENT_V3}/createRoom", {"preset": "public_chat"})
    assert created.code == 200, created
    room_id = created.json["room_id"]
    await join_remote_room(a, b, room_id, bob.user_id)
    return alice, bob, room_id


async def wait_backing_off(server: Any, destination: str) -> None:
    """Wait until ``server``'s federation sender backs off from ``destination``."""
    sender = server.federation.sender

    async def backing_off() -> bool:
        queue = sender.queue_for(destination)
        return queue is not None and queue.backing_off

    await wait_until(backing_off)


@asynccontextmanager
async def federating_deployment(
    tmp_path: Path, postgres_server: str, workers: list[tuple[str, int]]
) -> AsyncIterator[dict[str, Any]]:
    """An in-process worker deployment (tests/workers/inprocess.py) that federates:
    name -> HomeServer, the master's TLS federation listener on a free port."""
    from tests.workers.inprocess import in_process_deployment

    fed_port = free_port()
    async with in_process_deployment(
        tmp_path,
        postgres_server,
        workers,
        server_name=f"localhost:{fed_port}",
        federation=federation_section(fed_port),
    ) as (servers, _bus):
        yield servers
