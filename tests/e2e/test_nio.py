"""matrix-nio (a real client from PyPI) against a real `atrium run` process,
on SQLite and PostgreSQL: the flow Element users go through."""

from __future__ import annotations

import asyncio

import pytest
from nio import (
    AsyncClient,
    JoinResponse,
    LoginResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessagesResponse,
    RoomSendResponse,
    SyncResponse,
)

from tests.conftest import POSTGRES_URL, requires_postgres
from tests.support.db import create_postgres_database, drop_postgres_database
from tests.support.process import ATRIUM, AtriumProcess, free_port, generate

pytestmark = pytest.mark.slow


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=[requires_postgres, pytest.mark.postgres])]
)
def atrium_server(request, tmp_path):
    db_url = create_postgres_database(POSTGRES_URL) if request.param == "postgres" else None
    port = free_port()
    extra = ["--enable-registration"] + (["--database-url", db_url] if db_url else [])
    config = generate(
        tmp_path / "hs",
        "nio.test",
        port,
        *extra,
        config_overrides={"rate_limits": {"enabled": False}},
    )
    proc = AtriumProcess([*ATRIUM, "run", "-c", str(config)], port, tmp_path / "atrium.log").start()
    try:
        yield proc
    finally:
        proc.stop()
        if db_url:
            drop_postgres_database(POSTGRES_URL, db_url)


async def _register(url: str, name: str) -> AsyncClient:
    client = AsyncClient(url, f"@{name}:nio.test")
    resp = await client.register(name, f"pw-{name}")
    assert isinstance(resp, RegisterResponse), resp
    return client


def _timeline_bodies(sync: SyncResponse, room_id: str) -> list[str]:
    room = sync.rooms.join.get(room_id)
    if room is None:
        return []
    return [
        getattr(e, "body", None)
        for e in room.timeline.events
        if getattr(e, "body", None) is not None
    ]


async def _flow(url: str) -> None:
    alice = await _register(url, "alice")
    bob = await _register(url, "bob")
    try:
        again = AsyncClient(url, "@alice:nio.test")
        assert isinstance(await again.login("pw-alice"), LoginResponse)
        await again.close()

        created = await alice.room_create(name="nio room", invite=[bob.user_id])
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id

        first = await bob.sync(timeout=0)
        assert isinstance(first, SyncResponse), first
        assert room_id in first.rooms.invite
        assert isinstance(await bob.join(room_id), JoinResponse)

        await alice.sync(timeout=0)
        sent = await alice.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": "hello bob"}
        )
        assert isinstance(sent, RoomSendResponse), sent

        sync = await bob.sync(timeout=5000)
        assert "hello bob" in _timeline_bodies(sync, room_id)

        # Incremental long-poll wakes on a new message.
        waiting = asyncio.ensure_future(bob.sync(timeout=20000))
        await asyncio.sleep(0)
        for i in range(15):
            await alice.room_send(
                room_id, "m.room.message", {"msgtype": "m.text", "body": f"msg {i}"}
            )
        woke = await waiting
        assert isinstance(woke, SyncResponse)
        seen = _timeline_bodies(woke, room_id)
        more = await bob.sync(timeout=0)
        seen += _timeline_bodies(more, room_id)
        assert "msg 14" in seen

        # Paginate history backwards from the end.
        history = await bob.room_messages(room_id, start=more.next_batch, limit=30)
        assert isinstance(history, RoomMessagesResponse), history
        bodies = [getattr(e, "body", None) for e in history.chunk]
        assert "msg 14" in bodies and "hello bob" in bodies

        # Redact, then leave.
        redacted = await alice.room_redact(room_id, sent.event_id, reason="oops")
        assert getattr(redacted, "event_id", None), redacted
        assert (await bob.room_leave(room_id)).__class__.__name__ == "RoomLeaveResponse"
        after = await bob.sync(timeout=0)
        assert room_id in after.rooms.leave
    finally:
        await alice.close()
        await bob.close()


def test_nio_client_flow(atrium_server):
    asyncio.run(_flow(atrium_server.url))
