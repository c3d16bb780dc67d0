"""The whole topology behind nginx: master + 2 sync workers + 2 event writers +
a federation reader + a generic worker, each a real process on PostgreSQL +
Redis, with nginx (the OS package) in front running the routing that
``atrium routes --format nginx -c homeserver.yaml`` generates for them.

matrix-nio clients talk only to nginx: two users register and log in, create
rooms (on both event writers), join, send messages, and both long-poll /sync
until they have every message, in each room's order, exactly once. The
processes' own metrics and nginx's access log then show where each request
went: every /sync on a sync worker (a user's always on the same one), every
send on an event writer (a room's always on the same one), master-only and
read endpoints where the route table says, and each room's events persisted
by the writer owning the room.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict

import aiohttp
import pytest
from nio import (
    AsyncClient,
    JoinResponse,
    LoginResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessagesResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from atrium.cli import main
from atrium.handlers.event_writer import writer_for_room
from tests.conftest import requires_postgres, requires_redis
from tests.support.nginx import NginxProxy, nginx_binary
from tests.workers.support import Deployment

pytestmark = [pytest.mark.slow, requires_postgres, requires_redis]

WORKERS = "sync:2,event_writer:2,federation_reader:1,generic:1"
MESSAGES_PER_USER_PER_ROOM = 6
FULL_TIMELINE = {"room": {"timeline": {"limit": 1000}}}


@pytest.fixture
def topology(tmp_path):
    nginx_binary()  # skip (or fail under CI) before starting anything
    # The sync and generic workers are named like docker-compose's scaled
    # replicas (`--worker-name TYPE-{hostname}`), not by their files.
    d = Deployment(
        tmp_path,
        WORKERS,
        worker_names={
            "sync1": "sync-a-{hostname}",
            "sync2": "sync-b-{hostname}",
            "generic1": "generic-{hostname}",
        },
    ).start()
    proxy = NginxProxy(tmp_path / "nginx")
    proxy.dir.mkdir()
    try:
        rc = main(
            [
                "routes",
                "--format",
                "nginx",
                "-c",
                str(d.config_path),
                "--listen",
                proxy.listen,
                "-o",
                str(proxy.routing_conf),
            ]
        )
        assert rc == 0
        proxy.start()
        yield d, proxy
    finally:
        proxy.stop()
        d.stop()


class Syncer:
    """One user's nio client long-polling /sync through nginx, counting requests."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.requests = 0
        self.since: str | None = None
        self.seen: dict[str, list[str]] = defaultdict(list)

    async def sync(self, timeout_ms: int) -> SyncResponse:
        self.requests += 1
        resp = await self.client.sync(
            timeout=timeout_ms, since=self.since, sync_filter=FULL_TIMELINE
        )
        assert isinstance(resp, SyncResponse), resp
        self.since = resp.next_batch
        return resp

    async def collect(self, rooms: list[str], expected: int, deadline_s: float = 60) -> None:
        deadline = time.monotonic() + deadline_s
        while sum(len(self.seen[r]) for r in rooms) < expected:
            assert time.monotonic() < deadline, f"{self.client.user_id}: timed out"
            resp = await self.sync(2000)
            for room_id, room in resp.rooms.join.items():
                assert not room.timeline.limited, room_id
                for event in room.timeline.events:
                    if isinstance(event, RoomMessageText):
                        self.seen[room_id].append(event.event_id)


async def _flow(d: Deployment, proxy: NginxProxy) -> None:
    base = proxy.url
    writers = d.of_app("event_writer")
    # -- accounts: register both, then log bob in again (a second device) -------------
    alice = AsyncClient(base, "alice")
    bob_first = AsyncClient(base, "bob")
    bob = AsyncClient(base, "@bob:workers.test")
    try:
        for client, name in ((alice, "alice"), (bob_first, "bob")):
            resp = await client.register(name, f"pw-{name}-secret")
            assert isinstance(resp, RegisterResponse), resp
        login = await bob.login(password="pw-bob-secret", device_name="second")
        assert isinstance(login, LoginResponse), login
        assert login.device_id != bob_first.device_id

        # -- rooms until each event writer owns one; bob joins them ------------------
        rooms: list[str] = []
        while {writer_for_room(r, writers) for r in rooms} != set(writers) or len(rooms) < 2:
            created = await alice.room_create(name=f"room {len(rooms)}", invite=[bob.user_id])
            assert isinstance(created, RoomCreateResponse), created
            rooms.append(created.room_id)
            assert len(rooms) < 20, "the room hash never picked one of the writers"
        for room_id in rooms:
            joined = await bob.join(room_id)
            assert isinstance(joined, JoinResponse), joined

        syncers = [Syncer(alice), Syncer(bob)]
        for syncer in syncers:
            await syncer.sync(0)

        # -- both send to every room, concurrently ------------------------------------
        sent: dict[tuple[str, str], list[str]] = defaultdict(list)  # (user, room) -> ids

        async def send_all(client: AsyncClient) -> None:
            for i in range(MESSAGES_PER_USER_PER_ROOM):
                for room_id in rooms:
                    body = {"msgtype": "m.text", "body": f"{client.user_id} {i}"}
                    resp = await client.room_send(room_id, "m.room.message", body)
                    assert isinstance(resp, RoomSendResponse), resp
                    sent[(client.user_id, room_id)].append(resp.event_id)

        # Both users long-poll /sync through nginx while the messages go out.
        sends = 2 * MESSAGES_PER_USER_PER_ROOM * len(rooms)
        await asyncio.gather(
            send_all(alice), send_all(bob), *(s.collect(rooms, sends) for s in syncers)
        )
        assert sum(len(ids) for ids in sent.values()) == sends

        # Every event of each room, read through nginx (a generic worker).
        all_events: dict[str, int] = {}
        for room_id in rooms:
            page = await alice.room_messages(room_id, start="", direction="f", limit=1000)
            assert isinstance(page, RoomMessagesResponse), page
            all_events[room_id] = len(page.chunk)
            ids = {e.event_id for e in page.chunk if isinstance(e, RoomMessageText)}
            assert ids == {e for u in (alice, bob) for e in sent[(u.user_id, room_id)]}

        # -- both users see every message once, in the same order -------------------
        # /sync is in stream order. Concurrent sends to one room may fork its
        # DAG, so that order is not always /messages' topological one; but
        # every sync worker must give everybody the same order, with each
        # sender's messages in the order they were sent.
        for room_id in rooms:
            order = syncers[0].seen[room_id]
            assert len(order) == len(set(order)) == 2 * MESSAGES_PER_USER_PER_ROOM, order
            for syncer in syncers:
                assert syncer.seen[room_id] == order, (syncer.client.user_id, room_id)
            for user in (alice, bob):
                mine = sent[(user.user_id, room_id)]
                assert [e for e in order if e in mine] == mine, (user.user_id, room_id)
        sync_requests = sum(s.requests for s in syncers)
        assert all(s.requests >= 3 for s in syncers), [s.requests for s in syncers]
        tokens = {alice.access_token: "alice", bob.access_token: "bob"}
    finally:
        for client in (alice, bob_first, bob):
            await client.close()

    # -- where requests went: the processes' metrics ------------------------------------
    http = "atrium_http_requests_total"
    async with aiohttp.ClientSession() as session:

        async def served(name: str, route: str) -> float:
            return await d.metric_total(session, name, http, route=route)

        names = list(d.processes)
        syncs = {n: await served(n, "sync") for n in names}
        assert sum(syncs[n] for n in d.of_app("sync")) == sync_requests, syncs
        assert all(syncs[n] == 0 for n in names if n not in d.of_app("sync")), syncs

        sent = {n: await served(n, "send_message") for n in names}
        assert sum(sent[n] for n in writers) == sends, sent
        assert all(sent[n] == 0 for n in names if n not in writers), sent

        # Registration and login are the master's; /messages a generic worker's.
        assert await served("master", "register") == 2
        assert await served("master", "login") == 1
        generic = d.of_app("generic")[0]
        assert await served(generic, "messages") == len(rooms)

        # Each room's events were persisted by the writer owning it.
        persisted = {
            n: await d.metric_total(session, n, "atrium_events_persisted_total") for n in names
        }
        for writer in writers:
            owned = sum(n for r, n in all_events.items() if writer_for_room(r, writers) == writer)
            assert persisted[writer] == owned, (writer, persisted, all_events)
        assert all(persisted[n] == 0 for n in names if n not in writers), persisted

    # -- and nginx's access log: stickiness ------------------------------------------------
    log = proxy.requests()
    ports = {name: str(p.port) for name, p in d.processes.items()}
    by_port = {port: name for name, port in ports.items()}

    def process_of(entry: dict[str, str]) -> str:
        return by_port[entry["addr"].rsplit(":", 1)[1]]

    sync_by_user: dict[str, set[str]] = defaultdict(set)
    send_by_room: dict[str, set[str]] = defaultdict(set)
    for entry in log:
        if entry["uri"].endswith("/sync"):
            assert entry["upstream"] == "atrium_sync", entry
            sync_by_user[tokens[entry["token"]]].add(process_of(entry))
        elif "/send/" in entry["uri"]:
            assert entry["upstream"] == "atrium_event_writer", entry
            assert entry["room"] in rooms, entry
            send_by_room[entry["room"]].add(process_of(entry))
    assert set(sync_by_user) == {"alice", "bob"}
    for user, processes in sync_by_user.items():
        assert len(processes) == 1 and processes <= set(d.of_app("sync")), (user, processes)
    assert set(send_by_room) == set(rooms)
    for room_id, processes in send_by_room.items():
        assert len(processes) == 1 and processes <= set(writers), (room_id, processes)
    statuses = Counter(e["status"] for e in log)
    assert set(statuses) <= {"200"}, statuses


def test_clients_through_nginx_reach_the_right_processes(topology):
    asyncio.run(_flow(*topology))
