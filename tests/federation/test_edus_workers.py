"""EDUs received by a federation_reader worker take effect: typing, receipts,
presence, to-device and device-list streams are written by the master only,
so the reader forwards those EDUs to it (the ``federation_edus`` replication
endpoint) and a local user's /sync on a sync worker shows them."""

from __future__ import annotations

import pytest_twisted

from tests.conftest import POSTGRES_URL, requires_postgres
from tests.federation.support import (
    CLIENT_V3,
    federating_deployment,
    federating_server,
    wait_until,
)
from tests.federation.test_membership import send_text
from tests.support.client import JsonClient, q
from tests.workers.inprocess import client_for

pytestmark = [requires_postgres]


@pytest_twisted.ensureDeferred
async def test_edus_sent_to_a_federation_reader_reach_sync(tmp_path):
    async with federating_deployment(
        tmp_path, POSTGRES_URL, [("federation_reader", 1), ("sync", 1)]
    ) as servers:
        master, reader = servers["master"], servers["federation_reader1"]
        async with federating_server(tmp_path, "b") as b:
            alice = await client_for(master).register("alice")
            bob = await b.anon.register("bob")
            created = await alice.post(f"{CLIENT_V3}/createRoom", {"preset": "public_chat"})
            assert created.code == 200, created
            room_id = created.json["room_id"]
            joined = await bob.post(
                f"{CLIENT_V3}/join/{q(room_id)}", {}, query={"via": master.server_name}
            )
            assert joined.code == 200, joined
            message = await send_text(alice, room_id, "read me", "r1")

            async def reader_sees_bob():
                return bob.user_id in await reader.stores.members.get_users_in_room(room_id)

            await wait_until(reader_sees_bob)
            alice_sync = JsonClient(client_for(servers["sync1"]).base_url, alice.access_token)
            first = await alice_sync.get(f"{CLIENT_V3}/sync", query={"timeout": "0"})
            assert first.code == 200, first
            since = first.json["next_batch"]

            edus = [
                {
                    "edu_type": "m.typing",
                    "content": {"room_id": room_id, "user_id": bob.user_id, "typing": True},
                },
                {
                    "edu_type": "m.receipt",
                    "content": {
                        room_id: {
                            "m.read": {bob.user_id: {"event_ids": [message], "data": {"ts": 1}}}
                        }
                    },
                },
                {
                    "edu_type": "m.direct_to_device",
                    "content": {
                        "sender": bob.user_id,
                        "type": "org.example.hello",
                        "message_id": "hello-1",
                        "messages": {alice.user_id: {"*": {"greeting": "hi alice"}}},
                    },
                },
                {
                    "edu_type": "m.presence",
                    "content": {
                        "push": [
                            {"user_id": bob.user_id, "presence": "online", "last_active_ago": 5}
                        ]
                    },
                },
                {
                    "edu_type": "m.device_list_update",
                    "content": {
                        "user_id": bob.user_id,
                        "device_id": "BOBPHONE",
                        "stream_id": 1,
                        "prev_id": [],
                    },
                },
            ]
            # The /send servlet's handler on the reader (it has no TLS listener
            # of its own; its HTTP listener serves the same handler).
            body = {"origin": b.name, "origin_server_ts": 0, "pdus": [], "edus": edus}
            answer = await reader.federation.transactions.on_transaction(b.name, "edus-1", body)
            assert answer == {"pdus": {}}

            async def everything_seen(client, seen):
                got = await client.get(f"{CLIENT_V3}/sync", query={"since": since, "timeout": "0"})
                assert got.code == 200, got
                sync = got.json
                room = sync.get("rooms", {}).get("join", {}).get(room_id, {})
                for event in room.get("ephemeral", {}).get("events", []):
                    if event["type"] == "m.typing" and bob.user_id in event["content"]["user_ids"]:
                        seen["typing"] = True
                    if event["type"] == "m.receipt":
                        readers = event["content"].get(message, {}).get("m.read", {})
                        if bob.user_id in readers:
                            seen["receipt"] = True
                for event in sync.get("to_device", {}).get("events", []):
                    if event["sender"] == bob.user_id and event["type"] == "org.example.hello":
                        seen["to_device"] = event["content"]
                for event in sync.get("presence", {}).get("events", []):
                    if event["sender"] == bob.user_id and event["content"]["presence"] == "online":
                        seen["presence"] = True
                if bob.user_id in sync.get("device_lists", {}).get("changed", []):
                    seen["device_lists"] = True
                return len(seen) == 5

            # On the sync worker and on the master alike.
            for client in (alice_sync, alice):
                seen: dict[str, object] = {}
                await wait_until(lambda: everything_seen(client, seen))  # noqa: B023
                assert seen["to_device"] == {"greeting": "hi alice"}
            # The master (typing's writer, whose federation sender relays it) has it.
            assert bob.user_id in master.typing.typing_users(room_id)

            # A retried transaction (its answer lost) is not applied twice.
            again = await reader.federation.transactions.on_transaction(b.name, "edus-1", body)
            assert again == answer
            rows = await master.db.execute(
                "test",
                "SELECT COUNT(*) FROM device_inbox WHERE user_id = ?",
                alice.user_id,
            )
            assert rows[0][0] == 1
