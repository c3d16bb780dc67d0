"""REMOTE_SERVER_UP over replication: a process that hears from a remote
server announces it on the bus, and the federation sender ends its back-off
for that server when it hears the announcement."""

from __future__ import annotations

import pytest_twisted

from atrium.replication.bus import InProcessBus
from atrium.replication.commands import RemoteServerUpCommand
from tests.conftest import POSTGRES_URL
from tests.federation.support import (
    CLIENT_V3,
    federating_server,
    join_remote_room,
    wait_until,
)
from tests.replication.support import make_process, open_database
from tests.support.client import q


@pytest_twisted.ensureDeferred
async def test_remote_server_up_is_announced_and_ends_the_back_off(db_kind, tmp_path):
    bus = InProcessBus()
    overrides = {"worker_replication_secret": "s3cret-replication-secret"}
    async with federating_server(
        tmp_path, "a", db_kind, POSTGRES_URL, replication_bus=bus, overrides=overrides
    ) as a:
        other_db = open_database(a.hs.config.database_url)
        other = await make_process("fedreader", other_db, bus.connect())
        heard: list[str] = []
        other.handler.add_listener("REMOTE_SERVER_UP", lambda c: heard.append(c.server_name))
        await other.start()
        try:
            async with federating_server(tmp_path, "b") as b:
                alice = await a.anon.register("alice")
                bob = await b.anon.register("bob")
                room_id = (
                    await alice.post(f"{CLIENT_V3}/createRoom", {"preset": "public_chat"})
                ).json["room_id"]
                await join_remote_room(a, b, room_id, bob.user_id)
                # A heard from B (a signed /send): it says so on the bus.
                await wait_until(lambda: _async(b.name in heard))

                # Nothing of B's is on its way to A (any request from B would
                # also end A's back-off).
                async def b_idle():
                    queue = b.hs.federation.sender.queue_for(a.name)
                    return queue is None or (
                        not queue.pending_pdus
                        and not queue.pending_edus
                        and not queue._transmitting
                    )

                await wait_until(b_idle)
                # B's listener goes away: A backs off from B.
                from twisted.internet import reactor, tcp

                b_ports = [p for p in b.hs._ports if p.getHost().port == b.fed_port]
                for port in b_ports:
                    await port.stopListening()
                    b.hs._ports.remove(port)
                for selectable in list(reactor.getReaders()):
                    if isinstance(selectable, tcp.Server) and selectable.server in b_ports:
                        selectable.abortConnection()
                await a.hs.federation.client.close()
                sent = await alice.put(
                    f"{CLIENT_V3}/rooms/{q(room_id)}/send/m.room.message/t1",
                    {"msgtype": "m.text", "body": "queued"},
                )
                sender = a.hs.federation.sender

                async def backing_off():
                    queue = sender.queue_for(b.name)
                    return queue is not None and queue.backing_off

                await wait_until(backing_off)
                b.hs._ports.extend(b.hs.federation.listen(b.hs.router))

                # Another process announces B is up: A's sender retries at once.
                other.handler.send_command(RemoteServerUpCommand(b.name))

                async def delivered():
                    return await b.hs.stores.events.get_event(
                        sent.json["event_id"], allow_none=True
                    )

                await wait_until(delivered, timeout=5.0)
                assert not sender.queue_for(b.name).backing_off
        finally:
            await other.stop()
            other_db.close()


async def _async(value):
    return value
