"""/messages on a server that joined late: the history from before the join
is backfilled from a server in the room (GET /backfill), checked, stored
below the timeline (negative stream orderings) without touching current
state or forward extremities, and served in order."""

from __future__ import annotations

import pytest_twisted

from tests.federation.support import CLIENT_V3, join_remote_room
from tests.support.client import q


async def paginate_all(client, room_id, limit=10, max_pages=30):
    """Every event /messages gives going backwards from the newest, newest first."""
    events, token, pages = [], None, 0
    while pages < max_pages:
        query = {"dir": "b", "limit": str(limit)}
        if token is not None:
            query["from"] = token
        page = await client.get(f"{CLIENT_V3}/rooms/{q(room_id)}/messages", query=query)
        assert page.code == 200, page
        events.extend(page.json["chunk"])
        pages += 1
        token = page.json.get("end")
        if token is None:
            return events, pages
    raise AssertionError("pagination did not end")


def bodies(events):
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


async def late_join(a, b, count, topic_at=None):
    """alice@A's public room with ``count`` messages (and a topic set before
    message ``topic_at``), then bob@B joins: (bob, room_id, message event IDs)."""
    alice = await a.anon.register("alice")
    bob = await b.anon.register("bob")
    created = await alice.post(f"{CLIENT_V3}/createRoom", {"preset": "public_chat"})
    room_id = created.json["room_id"]
    sent = []
    for i in range(count):
        if i == topic_at:
            topic = await alice.put(
                f"{CLIENT_V3}/rooms/{q(room_id)}/state/m.room.topic", {"topic": "midway"}
            )
            assert topic.code == 200, topic
        reply = await alice.put(
            f"{CLIENT_V3}/rooms/{q(room_id)}/send/m.room.message/m{i}",
            {"msgtype": "m.text", "body": f"m{i}"},
        )
        assert reply.code == 200, reply
        sent.append(reply.json["event_id"])
    await join_remote_room(a, b, room_id, bob.user_id)
    return bob, room_id, sent


@pytest_twisted.ensureDeferred
async def test_history_before_the_join_is_backfilled_in_order(two_servers):
    a, b = two_servers
    bob, room_id, sent = await late_join(a, b, 30, topic_at=15)

    stores = b.hs.stores
    state_before = await stores.members.get_current_state_ids(room_id)
    tips_before = await stores.events.get_latest_event_ids_in_room(room_id)
    assert not await stores.events.have_seen_events(sent)
    since = (await bob.get(f"{CLIENT_V3}/sync", query={"timeout": "0"})).json["next_batch"]

    events, pages = await paginate_all(bob, room_id)
    assert bodies(events) == [f"m{i}" for i in reversed(range(30))]
    types = [e["type"] for e in events]
    assert types[0] == "m.room.member"  # bob's join, the newest
    # The topic is part of the state B got at the join (an outlier there):
    # it is not turned into history.
    assert "m.room.topic" not in types
    assert pages > 3  # several backfill rounds, each page within the limit

    stored = await stores.events.get_events(sent)
    assert set(stored) == set(sent)
    for event in stored.values():
        assert not event.internal_metadata.outlier
        assert event.internal_metadata.stream_ordering < 0
    # History does not change the present.
    assert await stores.members.get_current_state_ids(room_id) == state_before
    assert await stores.events.get_latest_event_ids_in_room(room_id) == tips_before
    # Backfilled events are not news for an incremental /sync.
    sync = await bob.get(f"{CLIENT_V3}/sync", query={"timeout": "0", "since": since})
    room = sync.json.get("rooms", {}).get("join", {}).get(room_id, {})
    assert not room.get("timeline", {}).get("events"), room

    # Once everything is here, paginating again asks A for nothing new.
    served = b.hs.pagination.backfill
    again, _ = await paginate_all(bob, room_id, limit=50)
    assert bodies(again) == bodies(events)
    assert room_id in served._fruitless or not await stores.events.get_backward_extremities(room_id)


@pytest_twisted.ensureDeferred
async def test_forged_history_is_not_stored(two_servers):
    """A backfilled event whose signature does not verify is dropped."""
    a, b = two_servers
    bob, room_id, (genuine,) = await late_join(a, b, 1)

    # A's /backfill answers with the event's signature broken.
    reads = a.hs.federation.reads
    original = reads.backfill

    async def tampering(origin, room, from_ids, limit):
        answer = await original(origin, room, from_ids, limit)
        for pdu in answer["pdus"]:
            for sigs in pdu["signatures"].values():
                for key_id in sigs:
                    sigs[key_id] = sigs[key_id][::-1]
        return answer

    reads.backfill = tampering
    try:
        events, _ = await paginate_all(bob, room_id)
    finally:
        reads.backfill = original
    assert bodies(events) == []
    assert not await b.hs.stores.events.have_seen_events([genuine])
