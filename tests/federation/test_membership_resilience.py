"""Two servers sharing a room (joined over federation) when they lose each
other: state changed on both sides while cut off resolves to the same
current state on both once they reconnect; a server that was down catches up
on the history it missed (/get_missing_events) when the next event comes."""

from __future__ import annotations

import pytest_twisted

from tests.federation.support import (
    CLIENT_V3,
    announce,
    cut_off,
    federating_server,
    reconnect,
    restarted,
    wait_backing_off,
    wait_until,
)
from tests.federation.test_membership import invite_and_join, send_text
from tests.support.client import JsonClient, q


async def _put_state(client, room_id, event_type, content):
    sent = await client.put(f"{CLIENT_V3}/rooms/{q(room_id)}/state/{event_type}", content)
    assert sent.code == 200, sent
    return sent.json["event_id"]


async def _has_events(server, event_ids):
    return await server.hs.stores.events.have_seen_events(event_ids) == set(event_ids)


async def _current_state(server, room_id):
    return dict(await server.hs.stores.members.get_current_state_ids(room_id))


async def _shared_room(a, b):
    """alice@A's room that bob@B joined over federation, bob with power 50."""
    alice = await a.anon.register("alice")
    bob = await b.anon.register("bob")
    # The creator (alice) is not listed: v12, the default, gives her an
    # infinite level.
    room_id = await invite_and_join(a, b, alice, bob, power_levels={"users": {bob.user_id: 50}})

    async def a_has_bob():
        return bob.user_id in await a.hs.stores.members.get_users_in_room(room_id)

    await wait_until(a_has_bob)
    return alice, bob, room_id


@pytest_twisted.ensureDeferred
async def test_split_brain_state_conflict_resolves_the_same_on_both(sqlite_servers):
    a, b = sqlite_servers
    alice, bob, room_id = await _shared_room(a, b)

    await cut_off(a)
    await cut_off(b)
    topic_a = await _put_state(alice, room_id, "m.room.topic", {"topic": "decided on A"})
    topic_b = await _put_state(bob, room_id, "m.room.topic", {"topic": "decided on B"})
    name_b = await _put_state(bob, room_id, "m.room.name", {"name": "named on B"})
    assert not await _has_events(a, [topic_b]) and not await _has_events(b, [topic_a])

    reconnect(a)
    reconnect(b)
    await announce(a, b)
    await announce(b, a)

    async def converged():
        if not (await _has_events(a, [topic_b, name_b]) and await _has_events(b, [topic_a])):
            return False
        state_a, state_b = await _current_state(a, room_id), await _current_state(b, room_id)
        return state_a if state_a == state_b else False

    state = await wait_until(converged)
    # Both sides picked the same topic out of the two, and kept B's name.
    assert state[("m.room.topic", "")] in (topic_a, topic_b)
    assert state[("m.room.name", "")] == name_b
    # ...and the DAG merges on the next message from either side.
    await send_text(alice, room_id, "after the split", "t-after")

    async def b_merged():
        extremities_a = await a.hs.stores.events.get_latest_event_ids_in_room(room_id)
        extremities_b = await b.hs.stores.events.get_latest_event_ids_in_room(room_id)
        return extremities_a == extremities_b and len(extremities_a) == 1

    await wait_until(b_merged)
    assert await _current_state(a, room_id) == await _current_state(b, room_id)


@pytest_twisted.ensureDeferred
async def test_power_level_demotion_during_a_split_wins_on_both(sqlite_servers):
    """While cut off, alice (100) demotes bob and bob (50) changes the topic:
    state resolution applies the power change first, so bob's topic loses on
    both servers (soft-failed on A, dropped by resolution on B)."""
    a, b = sqlite_servers
    alice, bob, room_id = await _shared_room(a, b)
    before = await _current_state(a, room_id)

    await cut_off(a)
    await cut_off(b)
    levels = await a.hs.stores.events.get_event(before[("m.room.power_levels", "")])
    demoted = dict(levels.content)
    demoted["users"] = {}
    power = await _put_state(alice, room_id, "m.room.power_levels", demoted)
    topic_b = await _put_state(bob, room_id, "m.room.topic", {"topic": "bob's last word"})

    reconnect(a)
    reconnect(b)
    await announce(a, b)
    await announce(b, a)

    async def converged():
        if not (await _has_events(a, [topic_b]) and await _has_events(b, [power])):
            return False
        state_a, state_b = await _current_state(a, room_id), await _current_state(b, room_id)
        return state_a if state_a == state_b else False

    state = await wait_until(converged)
    assert state[("m.room.power_levels", "")] == power
    assert state.get(("m.room.topic", "")) == before.get(("m.room.topic", ""))


@pytest_twisted.ensureDeferred
async def test_restarted_server_catches_up_on_missed_messages(tmp_path):
    async with federating_server(tmp_path, "a") as a:
        async with federating_server(tmp_path, "b") as b:
            alice = await a.anon.register("alice")
            bob = await b.anon.register("bob")
            room_id = await invite_and_join(a, b, alice, bob)

            async def a_has_bob():
                return bob.user_id in await a.hs.stores.members.get_users_in_room(room_id)

            await wait_until(a_has_bob)
            first_life = b
            # As a process dying would: its open connections go with it.
            await cut_off(b)
        # B is down: these reach nobody.
        missed = [await send_text(alice, room_id, f"missed {i}", f"m{i}") for i in range(3)]
        sender = a.hs.federation.sender
        await wait_backing_off(a.hs, first_life.name)
        # What A held for B is lost (a full queue, or a restart of A, loses it too).
        sender.queue_for(first_life.name).pending_pdus.clear()

        async with restarted(first_life) as b:
            bob_again = JsonClient(b.anon.base_url, bob.access_token)
            await announce(b, a)
            latest = await send_text(alice, room_id, "the next one", "m-next")

            async def b_has_everything():
                return await _has_events(b, [*missed, latest])

            await wait_until(b_has_everything)
            messages = await bob_again.get(
                f"{CLIENT_V3}/rooms/{q(room_id)}/messages", query={"dir": "b", "limit": "20"}
            )
            assert messages.code == 200, messages
            bodies = [e["content"].get("body") for e in messages.json["chunk"]]
            assert bodies[:4] == ["the next one", "missed 2", "missed 1", "missed 0"]
