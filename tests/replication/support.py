"""HomeServer-like processes for replication tests.

A ``Process`` has what replication touches on a real server: its own cache
registry (with recording caches), streams, data handler, publisher, a
``ReplicatingCacheInvalidator`` over a REAL database and a command handler on
a bus. The notifier records what it is told, together with the stream
position and which invalidations had happened at that moment, so tests can
check the invalidate -> advance -> notify order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import reactor, task

from atrium.handlers.typing import TypingHandler
from atrium.replication.bus import BusConnection
from atrium.replication.client import ReplicationHttpClient, StreamFetcher
from atrium.replication.command_handler import ReplicationCommandHandler
from atrium.replication.handler import ReplicationDataHandler
from atrium.replication.publisher import StreamPublisher
from atrium.replication.streams import STREAMS, Stream
from atrium.replication.streams.caches import ReplicatingCacheInvalidator
from atrium.storage.database import DatabasePool
from atrium.storage.stores import LocalCacheInvalidator, build_stores
from atrium.util.caches import CacheRegistry
from atrium.util.clock import Clock


class RecordingNotifier:
    def __init__(self, process: Process) -> None:
        self.process = process

    def on_new_data(
        self, stream: str, token: Any, users: Iterable[str] = (), rooms: Iterable[str] = ()
    ) -> None:
        p = self.process
        for hook in p.notify_hooks:
            hook(stream, token, frozenset(users), frozenset(rooms))
        p.log.append(
            (
                "notify",
                stream,
                token,
                frozenset(users),
                frozenset(rooms),
                # What this process had applied when it was woken.
                dict(p.data_handler.positions.get(stream, {})),
            )
        )


class Process:
    instance_name: str
    db: DatabasePool
    clock: Clock
    registry: CacheRegistry
    invalidator: ReplicatingCacheInvalidator
    streams: dict[str, Stream]
    data_handler: ReplicationDataHandler
    publisher: StreamPublisher
    handler: ReplicationCommandHandler
    connection: BusConnection
    stores: Any
    typing: TypingHandler
    log: list[tuple[Any, ...]]
    notify_hooks: list[Any]

    def record_cache(self, name: str) -> None:
        """Register a cache called ``name`` that logs its invalidations."""
        self.registry.register(
            name,
            lambda key: self.log.append(("invalidate", name, key)),
            lambda: self.log.append(("invalidate_all", name)),
        )

    def invalidated(self, name: str) -> list[Any]:
        return [e[2] for e in self.log if e[0] == "invalidate" and e[1] == name]

    def notifications(self, stream: str) -> list[tuple[Any, ...]]:
        return [e for e in self.log if e[0] == "notify" and e[1] == stream]

    async def start(self) -> None:
        await self.handler.load_stored_positions()
        await self.connection.start()

    async def stop(self) -> None:
        await self.connection.stop()
        http = self.handler.fetcher.http
        if http is not None:
            await http.close()


async def make_process(
    instance_name: str,
    db: DatabasePool,
    connection: BusConnection,
    *,
    written: Collection[str] = ("caches",),
    extra_streams: Iterable[type[Stream]] = (),
    http: ReplicationHttpClient | None = None,
    with_stores: bool = False,
    fetch_limit: int = 500,
    retry_later: float = 5.0,
    config: Any = None,
) -> Process:
    p = Process()
    p.instance_name = instance_name
    p.db = db
    p.clock = Clock(reactor)
    p.log = []
    p.notify_hooks = []
    p.registry = CacheRegistry()
    p.invalidator = await ReplicatingCacheInvalidator.create(
        LocalCacheInvalidator(p.registry), db, instance_name, p.clock
    )
    if with_stores:
        p.stores = await build_stores(db, p.invalidator)
        p.stores.register_caches(p.registry)
    stream_classes = [*STREAMS.values(), *extra_streams]
    # A reader's copy of the typing writer's in-memory state (see TypingStream.apply_rows).
    p.typing = TypingHandler(p.clock, _never_joined, p_publish(p))
    p.streams = {cls.NAME: cls(p) for cls in stream_classes}
    p.data_handler = ReplicationDataHandler(p.streams, p.registry.invalidate, RecordingNotifier(p))
    p.publisher = StreamPublisher(p.data_handler, instance_name)
    p.handler = ReplicationCommandHandler(
        instance_name=instance_name,
        data_handler=p.data_handler,
        streams=p.streams,
        fetcher=StreamFetcher(p.streams, http),
        clock=p.clock,
        written_streams=lambda: list(written),
        caches_writer=p.invalidator,
        fetch_limit=fetch_limit,
        retry_delays=(0.05,),
        retry_later=retry_later,
    )
    p.connection = connection
    p.handler.attach(connection)
    p.publisher.bus = p.handler
    # What the HTTP endpoints of a HomeServer read.
    p.config = config  # type: ignore[attr-defined]
    return p


async def _never_joined(user_id: str, room_id: str) -> bool:
    return False


def p_publish(p: Process) -> Any:
    return lambda *args: p.publisher.publish(*args)


async def settle(*processes: Process, timeout: float = 10.0) -> None:
    """Wait until no process has anything left to send or handle."""
    waited = 0.0
    quiet = 0
    while quiet < 3:
        await task.deferLater(reactor, 0.01, lambda: None)
        waited += 0.01
        if all(p.handler.is_idle() for p in processes):
            quiet += 1
        else:
            quiet = 0
        if waited > timeout:
            raise AssertionError("replication did not settle")


async def wait_until(condition: Any, timeout: float = 10.0, what: str = "condition") -> None:
    waited = 0.0
    while not condition():
        await task.deferLater(reactor, 0.02, lambda: None)
        waited += 0.02
        if waited > timeout:
            raise AssertionError(f"timed out waiting for {what}")


@asynccontextmanager
async def homeserver_on_bus(
    tmp_path: Path, db_kind: str, postgres_server: str, bus: Any, **overrides: Any
) -> AsyncIterator[tuple[Any, Any]]:
    """A real master HomeServer (HTTP on a free port) whose replication uses ``bus``
    (an InProcessBus set before setup(), or None with ``redis`` in overrides)."""
    from atrium.app.homeserver import HomeServer
    from atrium.config.generate import generate_config
    from atrium.config.homeserver import load_config
    from tests.support.client import JsonClient
    from tests.support.db import create_postgres_database, drop_postgres_database

    db_url = create_postgres_database(postgres_server) if db_kind == "postgres" else None
    config_path, _ = generate_config(
        tmp_path / "master",
        "test.local",
        database_url=db_url,
        http_port=0,
        enable_registration=True,
    )
    data = yaml.safe_load(config_path.read_text())
    data.setdefault("rate_limits", {})["enabled"] = False
    data.update(overrides)
    config_path.write_text(yaml.safe_dump(data))
    hs = HomeServer(load_config([str(config_path)]), reactor)
    if bus is not None:
        hs.replication_bus = bus
    try:
        await hs.setup()
        await hs.start()
        port = hs.start_listening()[0].getHost().port
        yield hs, JsonClient(f"http://127.0.0.1:{port}")
    finally:
        await hs.stop()
        if db_url is not None:
            drop_postgres_database(postgres_server, db_url)


def open_database(url: str) -> DatabasePool:
    """Another pool on the same database (a second process's connection)."""
    from atrium.storage.engines import create_engine

    pool = DatabasePool(create_engine(url), reactor)
    pool.start()
    return pool
