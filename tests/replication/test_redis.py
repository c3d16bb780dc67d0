"""Replication over a real Redis: order, hearing one's own messages, and recovery after
a connection is killed (CLIENT KILL) or the Redis server itself restarts.

Each test uses its own channel; tests that stop Redis start their own
redis-server on a free port and never touch the shared one.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
import pytest_twisted
import txredisapi
from prometheus_client import REGISTRY

from atrium.replication.redis import RedisBus
from tests.conftest import POSTGRES_URL, REDIS_URL, requires_redis
from tests.replication.support import Process, homeserver_on_bus, make_process, wait_until

pytestmark = [requires_redis, pytest.mark.redis]


def _bus(channel: str, name: str, url: str = REDIS_URL) -> RedisBus:
    return RedisBus(url, channel, name, initial_delay=0.1, max_delay=1.0)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def _kill_client(client_name: str, url: str = REDIS_URL) -> None:
    """CLIENT KILL the connection named ``client_name``, from a separate connection."""
    parsed = urlparse(url)
    admin = await txredisapi.Connection(
        parsed.hostname or "127.0.0.1", parsed.port or 6379, reconnect=False
    )
    try:
        listing = await admin.execute_command("CLIENT", "LIST")
        ids = [
            field.split("=", 1)[1]
            for line in str(listing).splitlines()
            if f" name={client_name} " in f" {line} "
            for field in line.split()
            if field.startswith("id=")
        ]
        assert ids, f"no Redis client named {client_name}"
        for client_id in ids:
            await admin.execute_command("CLIENT", "KILL", "ID", client_id)
    finally:
        await admin.disconnect()


def _gaps() -> float:
    return (
        REGISTRY.get_sample_value("atrium_replication_gaps_fetched_total", {"stream": "caches"})
        or 0.0
    )


async def _write(writer: Process, keys: range) -> None:
    for i in keys:
        writer.invalidator.invalidate("get_thing", [(i,)])


@pytest_twisted.ensureDeferred
async def test_rows_reach_every_subscriber_in_order_and_the_writer_ignores_its_own(db):
    channel = _unique("atrium-test")
    writer = await make_process("w1", db, _bus(channel, _unique("w1")))
    readers = [await make_process(f"r{i}", db, _bus(channel, _unique(f"r{i}"))) for i in range(2)]
    everyone = [writer, *readers]
    try:
        for p in everyone:
            p.record_cache("get_thing")
            await p.start()
        await _write(writer, range(1, 31))
        for reader in readers:
            await wait_until(lambda r=reader: len(r.invalidated("get_thing")) >= 30, what="rows")
        for reader in readers:
            assert reader.invalidated("get_thing") == [(i,) for i in range(1, 31)]
        assert writer.invalidated("get_thing") == [(i,) for i in range(1, 31)]
    finally:
        for p in everyone:
            await p.stop()


@pytest_twisted.ensureDeferred
async def test_killed_subscriber_reconnects_and_fetches_what_it_missed(db):
    channel = _unique("atrium-test")
    writer = await make_process("w1", db, _bus(channel, _unique("w1")))
    reader_name = _unique("r1")
    reader_bus = _bus(channel, reader_name)
    reader_bus.initial_delay = 0.5
    reader = await make_process("r1", db, reader_bus)
    reader.record_cache("get_thing")
    try:
        await writer.start()
        await reader.start()
        await _write(writer, range(1, 3))
        await wait_until(lambda: len(reader.invalidated("get_thing")) == 2, what="first rows")
        gaps_before = _gaps()

        await _kill_client(f"{reader_name}-subscribe")
        await wait_until(lambda: reader_bus._subscriber.protocol is None, what="link down")
        await _write(writer, range(3, 8))
        # Nothing new is written after the reconnect: its REPLICATE finds the gap.
        await wait_until(
            lambda: reader.data_handler.get_position("caches", "w1") == 7, what="catch-up"
        )
        assert reader.invalidated("get_thing") == [(i,) for i in range(1, 8)]
        assert _gaps() > gaps_before
    finally:
        await reader.stop()
        await writer.stop()


@pytest_twisted.ensureDeferred
async def test_messages_dropped_while_the_publisher_is_down_are_caught_up(db):
    channel = _unique("atrium-test")
    writer_name = _unique("w1")
    writer_bus = _bus(channel, writer_name)
    writer_bus.initial_delay = 0.5
    writer = await make_process("w1", db, writer_bus)
    reader = await make_process("r1", db, _bus(channel, _unique("r1")))
    reader.record_cache("get_thing")
    try:
        await writer.start()
        await reader.start()
        await _kill_client(f"{writer_name}-publish")
        await wait_until(lambda: writer_bus._publisher.protocol is None, what="link down")
        await _write(writer, range(1, 5))
        await wait_until(lambda: writer_bus.dropped_messages > 0, what="a dropped message")
        await wait_until(
            lambda: reader.data_handler.get_position("caches", "w1") == 4, what="catch-up"
        )
        assert reader.invalidated("get_thing") == [(i,) for i in range(1, 5)]
    finally:
        await reader.stop()
        await writer.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def own_redis() -> Iterator[tuple[str, object]]:
    """A private redis-server on a free port: (url, restart function)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed")
    port = _free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    state: dict[str, subprocess.Popen[bytes]] = {}

    def start() -> None:
        state["proc"] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop() -> None:
        proc = state["proc"]
        proc.terminate()
        proc.wait(10)

    start()
    try:
        yield f"redis://127.0.0.1:{port}", (start, stop)
    finally:
        stop()


@pytest_twisted.ensureDeferred
async def test_processes_reconnect_and_catch_up_after_redis_restarts(db, own_redis):
    url, (start_redis, stop_redis) = own_redis
    channel = _unique("atrium-test")
    writer = await make_process("w1", db, _bus(channel, _unique("w1"), url))
    reader = await make_process("r1", db, _bus(channel, _unique("r1"), url))
    reader.record_cache("get_thing")
    try:
        await writer.start()
        await reader.start()
        await _write(writer, range(1, 3))
        await wait_until(lambda: len(reader.invalidated("get_thing")) == 2, what="first rows")

        stop_redis()
        await _write(writer, range(3, 6))
        await wait_until(lambda: writer.connection.dropped_messages > 0, what="dropped message")
        start_redis()
        await wait_until(
            lambda: reader.data_handler.get_position("caches", "w1") == 5, what="catch-up"
        )
        await _write(writer, range(6, 8))
        await wait_until(lambda: reader.data_handler.get_position("caches", "w1") == 7, what="live")
        assert reader.invalidated("get_thing") == [(i,) for i in range(1, 8)]
    finally:
        await reader.stop()
        await writer.stop()


@pytest_twisted.ensureDeferred
async def test_homeserver_with_redis_configured_publishes_its_events(db_kind, tmp_path):
    channel = _unique("atrium-test")
    async with homeserver_on_bus(
        tmp_path, db_kind, POSTGRES_URL, None, redis={"url": REDIS_URL, "channel": channel}
    ) as (hs, anon):
        assert isinstance(hs.replication.connection, RedisBus)
        assert hs.replication.connection.channel == channel
        from tests.replication.support import open_database

        reader_db = open_database(hs.config.database_url)
        reader = await make_process("reader", reader_db, _bus(channel, _unique("reader")))
        try:
            await reader.start()
            alice = await anon.register("alice")
            room_id = (await alice.post("/_matrix/client/v3/createRoom", {})).json["room_id"]
            await wait_until(
                lambda: any(room_id in n[4] for n in reader.notifications("events")),
                what="the room's events on the reader",
            )
            await wait_until(
                lambda: (
                    reader.data_handler.get_position("events", "master")
                    == hs.stores.events.get_current_events_token()
                ),
                what="reader position",
            )
        finally:
            await reader.stop()
            reader_db.close()
