"""Remote membership on a deployment with workers (one test process, an
InProcessBus, PostgreSQL): the resident server's events writer is a worker,
so the master's send_join persists the join through it (replication HTTP);
a federation_reader worker serves make_join/send_join the same way."""

from __future__ import annotations

import pytest_twisted

from atrium.events.room_versions import get_room_version
from atrium.handlers.event_writer import writer_for_room
from tests.conftest import POSTGRES_URL, requires_postgres
from tests.federation.support import (
    CLIENT_V3,
    federating_deployment,
    federating_server,
    wait_until,
)
from tests.federation.test_membership import send_text, sync_rooms, timeline_bodies
from tests.support.client import q
from tests.workers.inprocess import client_for

pytestmark = [requires_postgres]


@pytest_twisted.ensureDeferred
async def test_join_and_invite_through_workers(tmp_path):
    async with federating_deployment(
        tmp_path, POSTGRES_URL, [("event_writer", 1), ("federation_reader", 1)]
    ) as servers:
        master, reader = servers["master"], servers["federation_reader1"]
        assert list(master.config.writers_for("events")) == ["event_writer1"]
        async with federating_server(tmp_path, "b") as b:
            alice = await client_for(master).register("alice")
            bob = await b.anon.register("bob")
            carol = await b.anon.register("carol")
            created = await alice.post(f"{CLIENT_V3}/createRoom", {"preset": "public_chat"})
            assert created.code == 200, created
            room_id = created.json["room_id"]
            assert writer_for_room(room_id, ["event_writer1"]) == "event_writer1"

            # bob joins through A's federation listener (the master): the join
            # is persisted by event_writer1.
            joined = await bob.post(
                f"{CLIENT_V3}/join/{q(room_id)}", {}, query={"via": master.server_name}
            )
            assert joined.code == 200, joined
            join_id = (await b.hs.stores.members.get_current_state_ids(room_id))[
                ("m.room.member", bob.user_id)
            ]
            stored = await master.stores.events.get_event(join_id)
            assert stored.internal_metadata.instance_name == "event_writer1"
            assert stored.internal_metadata.send_on_behalf_of == b.name

            # carol's join goes to the federation_reader directly (its
            # handler: the reader has no TLS listener of its own).
            remote = b.hs.federation.remote_membership
            answer = await reader.federation.membership.make_membership(
                b.name, room_id, carol.user_id, "join", ["10", "11", "12"]
            )
            room_version = get_room_version(answer["room_version"])
            event = remote._sign_template(room_version, answer["event"], {})
            result = await reader.federation.membership.send_join(
                b.name, room_id, event.event_id, event.get_pdu_json()
            )
            assert any(e["type"] == "m.room.create" for e in result["state"])
            assert carol.user_id in await reader.stores.members.get_users_in_room(room_id)

            async def master_has_carol():
                return carol.user_id in await master.stores.members.get_users_in_room(room_id)

            await wait_until(master_has_carol)

            # Invites of a remote user made on a worker-backed server.
            invite_room = await alice.post(f"{CLIENT_V3}/createRoom", {"preset": "private_chat"})
            invite_id = invite_room.json["room_id"]
            invited = await alice.post(
                f"{CLIENT_V3}/rooms/{q(invite_id)}/invite", {"user_id": bob.user_id}
            )
            assert invited.code == 200, invited

            async def bob_invited():
                return invite_id in (await sync_rooms(bob)).get("rooms", {}).get("invite", {})

            await wait_until(bob_invited)

            # Messages flow both ways.
            await send_text(alice, room_id, "from the workers", "w1")

            async def bob_sees():
                return "from the workers" in timeline_bodies(await sync_rooms(bob), room_id)

            await wait_until(bob_sees)
            await send_text(bob, room_id, "back to the workers", "w2")

            async def alice_sees():
                return "back to the workers" in timeline_bodies(await sync_rooms(alice), room_id)

            await wait_until(alice_sees)

            # alice (on the worker deployment) joins a room of B's: the join is
            # created on the master and persisted by event_writer1 with the
            # state send_join gave.
            b_room = await bob.post(f"{CLIENT_V3}/createRoom", {"preset": "public_chat"})
            b_room_id = b_room.json["room_id"]
            joined = await alice.post(f"{CLIENT_V3}/join/{q(b_room_id)}", {}, query={"via": b.name})
            assert joined.code == 200, joined
            assert alice.user_id in await master.stores.members.get_users_in_room(b_room_id)
            await send_text(bob, b_room_id, "welcome to B", "w3")

            async def alice_sees_b():
                return "welcome to B" in timeline_bodies(await sync_rooms(alice), b_room_id)

            await wait_until(alice_sees_b)
