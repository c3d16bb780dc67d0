"""Rooms shared between Atrium and a real Synapse: invites and joins in both
directions over make_join/send_join, messages and a topic change seen in
/sync on each side, a leave, and /messages backfilling history from Synapse.

Synapse is driven through its client API over HTTP, as any client would.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted

from tests.federation.support import CLIENT_V3, wait_until
from tests.support.client import JsonClient, q

pytestmark = pytest.mark.synapse

# Enough timeline for every message a test sends.
SYNC_FILTER = json.dumps({"room": {"timeline": {"limit": 100}}})


async def sync(client, since=None):
    query = {"timeout": "0", "filter": SYNC_FILTER}
    if since:
        query["since"] = since
    answer = await client.get(f"{CLIENT_V3}/sync", query=query)
    assert answer.code == 200, answer
    return answer.json


class SyncWatcher:
    """Incremental /sync of one client, remembering every timeline body seen.

    (Synapse answers a repeated initial sync from a response cache, so
    polling needs ``since``.)
    """

    def __init__(self, client):
        self.client = client
        self.since = None
        self.bodies: dict[str, list[str]] = {}
        self.last: dict = {}

    async def poll(self):
        self.last = await sync(self.client, self.since)
        self.since = self.last["next_batch"]
        for room_id, room in self.last.get("rooms", {}).get("join", {}).items():
            self.bodies.setdefault(room_id, []).extend(
                e["content"].get("body")
                for e in room.get("timeline", {}).get("events", [])
                if e["type"] == "m.room.message"
            )
        return self.last

    async def wait_for_body(self, room_id, body, timeout=20.0):
        async def seen():
            await self.poll()
            return body in self.bodies.get(room_id, [])

        await wait_until(seen, timeout=timeout, interval=0.2)


async def send_text(client, room_id, body):
    sent = await client.put(
        f"{CLIENT_V3}/rooms/{q(room_id)}/send/m.room.message/{body.replace(' ', '-')}",
        {"msgtype": "m.text", "body": body},
    )
    assert sent.code == 200, sent
    return sent.json["event_id"]


async def wait_for_state(client, room_id, event_type, check, timeout=20.0):
    async def matches():
        answer = await client.get(f"{CLIENT_V3}/rooms/{q(room_id)}/state/{event_type}")
        return answer.code == 200 and check(answer.json)

    await wait_until(matches, timeout=timeout, interval=0.2)


async def promote(admin, user, room_id, level):
    """``admin`` gives ``user`` (of the other server) ``level``; waits until
    ``user``'s server has the new power levels."""
    levels = await admin.get(f"{CLIENT_V3}/rooms/{q(room_id)}/state/m.room.power_levels")
    content = dict(levels.json)
    content["users"] = {**content.get("users", {}), user.user_id: level}
    promoted = await admin.put(f"{CLIENT_V3}/rooms/{q(room_id)}/state/m.room.power_levels", content)
    assert promoted.code == 200, promoted
    await wait_for_state(
        user,
        room_id,
        "m.room.power_levels",
        lambda c: c.get("users", {}).get(user.user_id) == level,
    )


async def members_of(client, room_id):
    answer = await client.get(f"{CLIENT_V3}/rooms/{q(room_id)}/joined_members")
    assert answer.code == 200, answer
    return set(answer.json["joined"])


async def accept_invite(sy, alice, room_id):
    """alice (Atrium) waits for Synapse's invite, joins over make_join/send_join,
    and both servers see her joined. Returns (the invite's /sync entry, alice's
    SyncWatcher)."""
    alice_sync = SyncWatcher(alice)

    async def alice_is_invited():
        return (await alice_sync.poll()).get("rooms", {}).get("invite", {}).get(room_id)

    invite = await wait_until(alice_is_invited, timeout=20.0, interval=0.2)
    joined = await alice.post(f"{CLIENT_V3}/rooms/{q(room_id)}/join", {})
    assert joined.code == 200, joined

    async def synapse_sees_alice():
        return alice.user_id in await members_of(sy, room_id)

    await wait_until(synapse_sees_alice, timeout=20.0, interval=0.2)
    assert await members_of(alice, room_id) == {sy.user_id, alice.user_id}
    return invite, alice_sync


async def exchange_messages(sy, alice, room_id, tag):
    """A message each way, each seen in the other side's /sync."""
    sy_sync, alice_sync = SyncWatcher(sy), SyncWatcher(alice)
    await sy_sync.poll()
    await alice_sync.poll()
    await send_text(sy, room_id, f"{tag} from synapse")
    await alice_sync.wait_for_body(room_id, f"{tag} from synapse")
    await send_text(alice, room_id, f"{tag} from atrium")
    await sy_sync.wait_for_body(room_id, f"{tag} from atrium")


@pytest_twisted.ensureDeferred
async def test_synapse_room_invite_join_messages_topic_leave(synapse, atrium):
    sy = await JsonClient(synapse.client_url).register("sy_host")
    alice = await atrium.anon.register("alice")
    created = await sy.post(
        f"{CLIENT_V3}/createRoom", {"preset": "private_chat", "name": "Hosted by Synapse"}
    )
    assert created.code == 200, created
    room_id = created.json["room_id"]

    # Synapse sends us an invite (v2); alice sees it and joins through Synapse.
    invited = await sy.post(f"{CLIENT_V3}/rooms/{q(room_id)}/invite", {"user_id": alice.user_id})
    assert invited.code == 200, invited

    invite, alice_sync = await accept_invite(sy, alice, room_id)
    assert any(e["type"] == "m.room.name" for e in invite["invite_state"]["events"])

    await exchange_messages(sy, alice, room_id, "hello")

    # A state change on Synapse's side reaches Atrium's current state.
    topic = await sy.put(f"{CLIENT_V3}/rooms/{q(room_id)}/state/m.room.topic", {"topic": "t1"})
    assert topic.code == 200, topic
    await wait_for_state(alice, room_id, "m.room.topic", lambda c: c.get("topic") == "t1")
    # ...and one on Atrium's side reaches Synapse, once Synapse's user has
    # given alice the power to set the topic (50 in a private_chat room).
    await promote(sy, alice, room_id, 50)
    ours = await alice.put(f"{CLIENT_V3}/rooms/{q(room_id)}/state/m.room.topic", {"topic": "t2"})
    assert ours.code == 200, ours
    await wait_for_state(sy, room_id, "m.room.topic", lambda c: c.get("topic") == "t2")

    # Alice leaves: Synapse sees it, and she no longer gets the room's messages.
    left = await alice.post(f"{CLIENT_V3}/rooms/{q(room_id)}/leave", {})
    assert left.code == 200, left

    async def synapse_sees_leave():
        return alice.user_id not in await members_of(sy, room_id)

    await wait_until(synapse_sees_leave, timeout=20.0, interval=0.2)
    member = await sy.get(f"{CLIENT_V3}/rooms/{q(room_id)}/state/m.room.member/{q(alice.user_id)}")
    assert member.json["membership"] == "leave"
    assert room_id in (await alice_sync.poll()).get("rooms", {}).get("leave", {})


@pytest_twisted.ensureDeferred
async def test_synapse_user_joins_an_atrium_room(synapse, atrium):
    sy = await JsonClient(synapse.client_url).register("sy_guest")
    alice = await atrium.anon.register("alice")
    created = await alice.post(
        f"{CLIENT_V3}/createRoom", {"preset": "public_chat", "name": "Hosted by Atrium"}
    )
    assert created.code == 200, created
    room_id = created.json["room_id"]
    await send_text(alice, room_id, "before the join")

    # Synapse's make_join/send_join to us.
    joined = await sy.post(f"{CLIENT_V3}/join/{q(room_id)}", {}, query={"server_name": atrium.name})
    assert joined.code == 200, joined

    async def atrium_sees_sy():
        return sy.user_id in await members_of(alice, room_id)

    await wait_until(atrium_sees_sy, timeout=20.0, interval=0.2)
    assert await members_of(sy, room_id) == {sy.user_id, alice.user_id}
    name = await sy.get(f"{CLIENT_V3}/rooms/{q(room_id)}/state/m.room.name")
    assert name.code == 200 and name.json["name"] == "Hosted by Atrium", name

    await exchange_messages(sy, alice, room_id, "hi")
    topic = await alice.put(
        f"{CLIENT_V3}/rooms/{q(room_id)}/state/m.room.topic", {"topic": "atrium topic"}
    )
    assert topic.code == 200, topic
    await wait_for_state(sy, room_id, "m.room.topic", lambda c: c.get("topic") == "atrium topic")

    # Synapse backfills the message from before its join from us.
    history = await sy.get(
        f"{CLIENT_V3}/rooms/{q(room_id)}/messages", query={"dir": "b", "limit": "50"}
    )
    assert history.code == 200, history
    assert "before the join" in [e["content"].get("body") for e in history.json["chunk"]]

    # The Synapse user leaves: our side sees it.
    left = await sy.post(f"{CLIENT_V3}/rooms/{q(room_id)}/leave", {})
    assert left.code == 200, left

    async def atrium_sees_leave():
        return sy.user_id not in await members_of(alice, room_id)

    await wait_until(atrium_sees_leave, timeout=20.0, interval=0.2)


@pytest_twisted.ensureDeferred
async def test_history_is_backfilled_from_synapse(synapse, atrium):
    sy = await JsonClient(synapse.client_url).register("sy_history")
    alice = await atrium.anon.register("alice")
    created = await sy.post(f"{CLIENT_V3}/createRoom", {"preset": "public_chat"})
    assert created.code == 200, created
    room_id = created.json["room_id"]
    for i in range(25):
        await send_text(sy, room_id, f"old {i}")
    joined = await alice.post(
        f"{CLIENT_V3}/join/{q(room_id)}", {}, query={"server_name": synapse.server_name}
    )
    assert joined.code == 200, joined

    seen, token = [], None
    for _ in range(20):
        query = {"dir": "b", "limit": "10"}
        if token:
            query["from"] = token
        page = await alice.get(f"{CLIENT_V3}/rooms/{q(room_id)}/messages", query=query)
        assert page.code == 200, page
        seen.extend(e["content"].get("body") for e in page.json["chunk"])
        token = page.json.get("end")
        if token is None:
            break
    assert [b for b in seen if b and b.startswith("old ")] == [
        f"old {i}" for i in reversed(range(25))
    ]
    stored = await atrium.hs.stores.events.get_backward_extremities(room_id)
    assert room_id in atrium.hs.pagination.backfill._fruitless or not stored
