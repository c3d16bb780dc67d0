"""/sync long-polling: woken by news in the user's rooms, otherwise empty at the timeout.

Also the seeds' invariant end to end: a long-poll woken by the user's own
join to a new room must see that room (the cached room list is invalidated
before the notifier wakes the request).
"""

from __future__ import annotations

import time

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from tests.api.test_sync import V3, create_room, join, send, sync
from tests.support.client import q


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_long_poll_wakes_on_message_in_joined_room(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    since = (await sync(bob))["next_batch"]
    started = time.monotonic()
    poll = defer.ensureDeferred(sync(bob, since=since, timeout=10_000))
    await sleep(0.2)
    assert not poll.called
    await send(alice, room_id, "wake up")
    body = await poll
    assert time.monotonic() - started < 5
    from tests.api.test_sync import bodies

    assert bodies(body["rooms"]["join"][room_id]) == ["wake up"]


@pytest_twisted.ensureDeferred
async def test_long_poll_times_out_empty_and_ignores_other_rooms(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    bobs_room = await create_room(bob)
    alices_room = await create_room(alice)
    since = (await sync(bob))["next_batch"]
    started = time.monotonic()
    poll = defer.ensureDeferred(sync(bob, since=since, timeout=800))
    await sleep(0.1)
    # News in a room bob is not in neither wakes nor shows.
    await send(alice, alices_room, "not for bob")
    body = await poll
    assert time.monotonic() - started >= 0.75
    assert "rooms" not in body
    assert body["next_batch"] != since  # the stream moved on
    assert bobs_room not in body.get("rooms", {}).get("join", {})


@pytest_twisted.ensureDeferred
async def test_long_poll_sees_room_the_user_joins_while_waiting(server):
    """Seed invariant: get_rooms_for_user_with_stream_ordering is cached without the
    room when the long-poll starts; the join invalidates it before waking the poll."""
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    await create_room(bob)
    room_id = await create_room(alice, preset="public_chat")
    since = (await sync(bob))["next_batch"]
    cache = hs.stores.members.get_rooms_for_user_with_stream_ordering.cache
    cached = cache.get_if_cached((bob.user_id,))
    assert room_id not in {r for r, _ in cached}
    poll = defer.ensureDeferred(sync(bob, since=since, timeout=10_000))
    await sleep(0.1)
    await join(bob, room_id)
    body = await poll
    assert room_id in body["rooms"]["join"]


@pytest_twisted.ensureDeferred
async def test_long_poll_wakes_on_invite(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    room_id = await create_room(alice)
    since = (await sync(bob))["next_batch"]
    poll = defer.ensureDeferred(sync(bob, since=since, timeout=10_000))
    await sleep(0.1)
    assert (
        await alice.post(f"{V3}/rooms/{q(room_id)}/invite", {"user_id": bob.user_id})
    ).code == 200
    body = await poll
    assert room_id in body["rooms"]["invite"]


@pytest_twisted.ensureDeferred
async def test_full_state_answers_at_once(server):
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await create_room(alice, name="Full")
    since = (await sync(alice))["next_batch"]
    started = time.monotonic()
    body = await sync(alice, since=since, timeout=5_000, full_state="true")
    assert time.monotonic() - started < 2
    entry = body["rooms"]["join"][room_id]
    assert entry["timeline"]["events"] == []
    types = {e["type"] for e in entry["state"]["events"]}
    assert {"m.room.create", "m.room.name", "m.room.member", "m.room.power_levels"} <= types
