"""The HTTP side of replication: rows of an in-memory stream fetched from its writer,
secret checks, and POST endpoints deduplicated by transaction ID."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from atrium.errors import Forbidden
from atrium.http.server import JsonResource, Router
from atrium.http.site import AtriumSite
from atrium.replication import http as replication_http
from atrium.replication.bus import InProcessBus
from atrium.replication.client import ReplicationHttpClient, ReplicationHttpError
from atrium.replication.streams import Stream, StreamRow, StreamUpdates
from atrium.replication.streams._base import Effects
from tests.replication.support import Process, make_process, settle, wait_until

SECRET = "a-long-enough-replication-secret"


@attrs.frozen
class NumberRow(StreamRow):
    n: int


class NumbersStream(Stream):
    """A stream that lives only in its writer's memory, like typing."""

    NAME = "numbers"
    ROW_TYPE = NumberRow
    IN_MEMORY = True

    def __init__(self, hs: Any) -> None:
        super().__init__(hs)
        self.log: list[tuple[int, StreamRow]] = []

    def current_token(self, instance_name: str) -> int:
        return self.log[-1][0] if self.log else 0

    async def get_updates(
        self, instance_name: str, from_token: int, to_token: int, limit: int
    ) -> StreamUpdates:
        rows = [(t, r) for t, r in self.log if from_token < t <= to_token][:limit]
        limited = len(rows) == limit
        return StreamUpdates(rows, rows[-1][0] if limited else to_token, limited)

    async def effects(self, rows: Any) -> Effects:
        return Effects(invalidations=[("numbers_cache", [(r.n,) for r in rows])])


@attrs.frozen
class FakeConfig:
    worker_replication_secret: str | None = SECRET
    max_request_size: int = 1024 * 1024


async def _write_number(writer: Process, n: int) -> None:
    stream = writer.streams["numbers"]
    token = stream.current_token(writer.instance_name) + 1
    row = NumberRow(n)
    stream.log.append((token, row))
    await writer.publisher.publish("numbers", token, [row])


def _serve(process: Process, router: Router) -> tuple[Any, str]:
    site = AtriumSite(JsonResource(router), 1024 * 1024)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    return port, f"http://127.0.0.1:{port.getHost().port}"


@pytest_twisted.ensureDeferred
async def test_missed_rows_of_an_in_memory_stream_are_fetched_from_its_writer(db):
    bus = InProcessBus()
    writer = await make_process(
        "w1",
        db,
        bus.connect(),
        written=("caches", "numbers"),
        extra_streams=[NumbersStream],
        config=FakeConfig(),
    )
    router = Router()
    replication_http.register_servlets(writer, router)
    port, url = _serve(writer, router)
    # Starts with the wrong secret: its first catch-up fails (403) and is retried.
    http = ReplicationHttpClient(reactor, "wrong-secret", lambda i: url if i == "w1" else None)
    reader = await make_process(
        "r1", db, bus.connect(), extra_streams=[NumbersStream], http=http, retry_later=0.2
    )
    reader.record_cache("numbers_cache")
    try:
        await writer.start()
        await reader.start()
        await _write_number(writer, 1)
        await settle(writer, reader)
        assert reader.invalidated("numbers_cache") == [(1,)]

        reader.connection.simulate_disconnect()
        for n in (2, 3, 4):
            await _write_number(writer, n)
        reader.connection.simulate_reconnect(notify=False)
        await _write_number(writer, 5)
        await settle(writer, reader)
        # The fetch was refused: nothing past 1 was applied, not even the live row 5.
        assert reader.invalidated("numbers_cache") == [(1,)]
        assert reader.data_handler.get_position("numbers", "w1") == 1

        http.secret = SECRET
        await wait_until(
            lambda: reader.data_handler.get_position("numbers", "w1") == 5, what="retry"
        )
        await settle(writer, reader)
        assert reader.invalidated("numbers_cache") == [(n,) for n in range(1, 6)]
    finally:
        await reader.stop()
        await writer.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_in_memory_rows_of_another_process_are_not_served_here(db):
    writer = await make_process(
        "w1", db, InProcessBus().connect(), extra_streams=[NumbersStream], config=FakeConfig()
    )
    router = Router()
    replication_http.register_servlets(writer, router)
    port, url = _serve(writer, router)
    http = ReplicationHttpClient(reactor, SECRET, lambda i: url)
    try:
        with pytest.raises(ReplicationHttpError) as e:
            await http.get_stream_updates(writer.streams["numbers"], "w2", 0, 5, 10)
        assert e.value.code == 404
        # Database streams can be served for any writer.
        updates = await http.get_stream_updates(writer.streams["caches"], "w2", 0, 5, 10)
        assert updates.rows == [] and updates.upto_token == 5
    finally:
        await http.close()
        await port.stopListening()


class _Hs:
    """What register_replication_endpoint needs of a HomeServer."""

    def __init__(self, secret: str | None = SECRET) -> None:
        from atrium.util.clock import Clock

        self.config = FakeConfig(worker_replication_secret=secret)
        self.clock = Clock(reactor)


@pytest_twisted.ensureDeferred
async def test_post_endpoint_runs_once_per_transaction_id():
    calls: list[dict[str, Any]] = []
    gate: defer.Deferred[None] = defer.Deferred()

    async def handler(body: dict[str, Any]) -> tuple[int, Any]:
        calls.append(body)
        if body.get("wait"):
            await gate
        if body.get("forbidden"):
            raise Forbidden("not you")
        if body.get("flaky") and len(calls) == 5:
            raise RuntimeError("transient")
        return 200, {"call": len(calls)}

    router = Router()
    replication_http.register_replication_endpoint(_Hs(), router, "send_things", handler)
    port = reactor.listenTCP(
        0, AtriumSite(JsonResource(router), 1024 * 1024), interface="127.0.0.1"
    )
    url = f"http://127.0.0.1:{port.getHost().port}"
    http = ReplicationHttpClient(reactor, SECRET, lambda i: url)
    try:
        first = await http.call_endpoint("w1", "send_things", {"x": 1}, txn_id="t1")
        again = await http.call_endpoint("w1", "send_things", {"x": 1}, txn_id="t1")
        assert first == again == {"call": 1} and len(calls) == 1
        assert await http.call_endpoint("w1", "send_things", {"x": 2}, txn_id="t2") == {"call": 2}

        # Two requests with one ID while the first is still running: one execution.
        a = defer.ensureDeferred(http.call_endpoint("w1", "send_things", {"wait": 1}, txn_id="t3"))
        b = defer.ensureDeferred(http.call_endpoint("w1", "send_things", {"wait": 1}, txn_id="t3"))
        await wait_until(lambda: len(calls) == 3, what="first execution")
        gate.callback(None)
        assert await a == await b == {"call": 3}
        assert len(calls) == 3

        # A Matrix error is an answer too: remembered, not retried.
        for _ in range(2):
            with pytest.raises(ReplicationHttpError) as e:
                await http.call_endpoint("w1", "send_things", {"forbidden": 1}, txn_id="t4")
            assert e.value.code == 403
        assert len(calls) == 4

        # An unexpected failure (500) is not remembered: the caller's retry, with
        # the same transaction ID, runs the request again and succeeds.
        from atrium.util.clock import Clock

        retried = await http.call_endpoint(
            "w1", "send_things", {"flaky": 1}, txn_id="t6", clock=Clock(reactor)
        )
        assert retried == {"call": 6} and len(calls) == 6

        wrong = ReplicationHttpClient(reactor, "not-the-secret", lambda i: url)
        with pytest.raises(ReplicationHttpError) as e:
            await wrong.call_endpoint("w1", "send_things", {}, txn_id="t5")
        assert e.value.code == 403 and len(calls) == 6
        await wrong.close()
    finally:
        await http.close()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_post_endpoint_is_forbidden_when_no_secret_is_configured():
    async def handler(body: dict[str, Any]) -> tuple[int, Any]:
        raise AssertionError("must not run")

    router = Router()
    replication_http.register_replication_endpoint(_Hs(secret=None), router, "send_things", handler)
    port = reactor.listenTCP(
        0, AtriumSite(JsonResource(router), 1024 * 1024), interface="127.0.0.1"
    )
    url = f"http://127.0.0.1:{port.getHost().port}"
    # Even a caller presenting "a" secret is refused: there is none to match.
    http = ReplicationHttpClient(reactor, SECRET, lambda i: url)
    try:
        with pytest.raises(ReplicationHttpError) as e:
            await http.call_endpoint("w1", "send_things", {}, txn_id="t1")
        assert e.value.code == 403
    finally:
        await http.close()
        await port.stopListening()
