"""GET /events: the deprecated r0 event stream (served by sync workers).

It must deliver the new timeline events of the user's rooms with their room
IDs, wait for them, chain by ``end`` tokens without gaps or repeats, and
leave to-device messages queued for /sync.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer

from tests.api.test_sync import V3, create_room, join, send, sync
from tests.support.client import q


async def events(client, **query):
    resp = await client.get(f"{V3}/events", query={k: str(v) for k, v in query.items()})
    assert resp.code == 200, resp
    return resp.json


def messages(body):
    return [
        (e["room_id"], e["content"]["body"]) for e in body["chunk"] if e["type"] == "m.room.message"
    ]


@pytest_twisted.ensureDeferred
async def test_events_chain_without_gaps_and_with_room_ids(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    room_a = await create_room(alice, preset="public_chat")
    room_b = await create_room(alice, preset="public_chat")
    await join(bob, room_a)
    first = await events(bob)  # from "now": nothing yet, an end token to chain from
    assert first["chunk"] == []
    await send(alice, room_a, "one")
    await join(bob, room_b)
    await send(alice, room_b, "two")
    second = await events(bob, **{"from": first["end"]})
    assert second["start"] == first["end"]
    assert messages(second) == [(room_a, "one"), (room_b, "two")]
    joins = [e for e in second["chunk"] if e["type"] == "m.room.member"]
    assert [(e["room_id"], e["state_key"]) for e in joins] == [(room_b, bob.user_id)]
    # Chained from the new end: only what came after.
    await send(alice, room_a, "three")
    third = await events(bob, **{"from": second["end"]})
    assert messages(third) == [(room_a, "three")]


@pytest_twisted.ensureDeferred
async def test_events_waits_for_news_then_times_out_empty(server):
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await create_room(alice)
    start = (await events(alice))["end"]
    poll = defer.ensureDeferred(events(alice, timeout=10_000, **{"from": start}))
    assert not poll.called
    await send(alice, room_id, "wake")
    assert messages(await poll) == [(room_id, "wake")]
    empty = await events(alice, timeout=200, **{"from": (await events(alice))["end"]})
    assert empty["chunk"] == []


@pytest_twisted.ensureDeferred
async def test_events_leaves_to_device_messages_for_sync(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    since = (await sync(alice))["next_batch"]
    resp = await bob.put(
        f"{V3}/sendToDevice/m.test/{q('t1')}", {"messages": {alice.user_id: {"*": {"n": 1}}}}
    )
    assert resp.code == 200, resp
    # Two /events calls chained past the to-device message...
    first = await events(alice, **{"from": since})
    await events(alice, **{"from": first["end"]})
    # ...and /sync from before it still delivers it.
    body = await sync(alice, since=since)
    assert [m["content"] for m in body["to_device"]["events"]] == [{"n": 1}]


@pytest_twisted.ensureDeferred
async def test_events_bad_tokens_and_missing_auth(server):
    hs, anon = server
    alice = await anon.register("alice")
    resp = await alice.get(f"{V3}/events", query={"from": "not-a-token"})
    assert resp.code == 400 and resp.json["errcode"] == "M_INVALID_PARAM", resp
    resp = await alice.get(f"{V3}/events", query={"timeout": "soon"})
    assert resp.code == 400 and resp.json["errcode"] == "M_INVALID_PARAM", resp
    resp = await anon.get(f"{V3}/events")
    assert resp.code == 401 and resp.json["errcode"] == "M_MISSING_TOKEN", resp
