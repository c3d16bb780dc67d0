"""master + 2 sync workers + 2 event writers + a federation reader + a generic
worker, each a real process on PostgreSQL + Redis: matrix-nio clients send to
rooms owned by both event writers, and every sync worker delivers every event
to every member, in order, exactly once."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from nio import (
    AsyncClient,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from atrium.handlers.event_writer import writer_for_room
from tests.conftest import requires_postgres, requires_redis
from tests.workers.support import Api, Deployment, collect_timeline, sync_once

pytestmark = [pytest.mark.slow, requires_postgres, requires_redis]

MESSAGES_PER_ROOM = 12


@pytest.fixture
def deployment(tmp_path):
    d = Deployment(tmp_path, "sync:2,event_writer:2,federation_reader:1,generic:1").start()
    try:
        yield d
    finally:
        d.stop()


def nio_client(url: str, user_id: str, token: str) -> AsyncClient:
    """A nio client bound to one process, logged in with an existing token."""
    client = AsyncClient(url, user_id)
    client.access_token = token
    client.user_id = user_id
    return client


async def _rooms_on_both_writers(alice: AsyncClient, bob_id: str) -> list[str]:
    """Rooms (alice's, bob invited) until each event writer owns at least one."""
    writers = ["event_writer1", "event_writer2"]
    rooms: list[str] = []
    owners: set[str] = set()
    while owners != set(writers) or len(rooms) < 3:
        created = await alice.room_create(name=f"room {len(rooms)}", invite=[bob_id])
        assert isinstance(created, RoomCreateResponse), created
        rooms.append(created.room_id)
        owners.add(writer_for_room(created.room_id, writers))
        assert len(rooms) < 20, "the room hash never picked one of the writers"
    return rooms


async def _flow(d: Deployment) -> None:
    async with aiohttp.ClientSession() as session:
        master = Api(session, d.url("master"))
        alice_id, alice_token = await master.register("alice")
        bob_id, bob_token = await master.register("bob")
        # Room creation on the master goes to the owning writer over replication.
        alice = nio_client(d.url("master"), alice_id, alice_token)
        try:
            rooms = await _rooms_on_both_writers(alice, bob_id)
        finally:
            await alice.close()
        bob_master = Api(session, d.url("master"), bob_token)
        for room_id in rooms:
            code, body = await bob_master.request("POST", f"/_matrix/client/v3/join/{room_id}")
            assert code == 200, body

        # Each user's starting point on each sync worker.
        sync_workers = d.of_app("sync")
        starts = {}
        for worker in sync_workers:
            for who, token in (("alice", alice_token), ("bob", bob_token)):
                api = Api(session, d.url(worker), token)
                starts[(worker, who)] = (await sync_once(api, None))["next_batch"]

        # matrix-nio senders: alice through one event writer, bob through the
        # other (each reaches rooms the other writer owns over replication).
        senders = [
            nio_client(d.url("event_writer1"), alice_id, alice_token),
            nio_client(d.url("event_writer2"), bob_id, bob_token),
        ]
        sent: dict[str, list[str]] = {room_id: [] for room_id in rooms}

        async def send_all(client: AsyncClient, tag: str) -> None:
            for i in range(MESSAGES_PER_ROOM // 2):
                for room_id in rooms:
                    resp = await client.room_send(
                        room_id, "m.room.message", {"msgtype": "m.text", "body": f"{tag} {i}"}
                    )
                    assert isinstance(resp, RoomSendResponse), resp

        try:
            await asyncio.gather(*(send_all(c, c.user_id) for c in senders))
        finally:
            for c in senders:
                await c.close()
        # The order each room's timeline must have: its stream order.
        for room_id in rooms:
            code, body = await bob_master.request(
                "GET", f"/_matrix/client/v3/rooms/{room_id}/messages?dir=f&limit=1000"
            )
            assert code == 200, body
            sent[room_id] = [e["event_id"] for e in body["chunk"] if e["type"] == "m.room.message"]
            assert len(sent[room_id]) == MESSAGES_PER_ROOM

        expected = sum(len(ids) for ids in sent.values())
        for (worker, who), since in starts.items():
            token = alice_token if who == "alice" else bob_token
            seen, _ = await collect_timeline(
                Api(session, d.url(worker), token), since, set(rooms), expected
            )
            for room_id in rooms:
                got = [e for r, e in seen if r == room_id]
                assert got == sent[room_id], (worker, who, room_id)
            assert len(seen) == expected, (worker, who)

        # matrix-nio itself syncing through a sync worker sees the same.
        reader = nio_client(d.url(sync_workers[1]), bob_id, bob_token)
        try:
            first = await reader.sync(timeout=0, full_state=True)
            assert isinstance(first, SyncResponse), first
            for room_id in rooms:
                ids = [
                    e.event_id
                    for e in first.rooms.join[room_id].timeline.events
                    if isinstance(e, RoomMessageText)
                ]
                # The newest messages, in the order the room has them.
                assert ids and ids == sent[room_id][-len(ids) :], room_id
        finally:
            await reader.close()


def test_every_sync_worker_delivers_every_event_once_in_order(deployment):
    asyncio.run(_flow(deployment))
