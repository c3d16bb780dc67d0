"""RoomMemberStore: joined rooms and members, invalidation, local memberships."""

from __future__ import annotations

import pytest_twisted

from atrium.events.room_versions import V10
from atrium.state.context import EventContext
from tests.storage.harness import StatementCounter, StorageHarness
from tests.support.events import standard_room

BOB = "@bob:example.org"
CAROL = "@carol:example.org"
REMOTE = "@rita:remote.example"


@pytest_twisted.ensureDeferred
async def test_rooms_for_user_is_invalidated_when_the_user_leaves(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[BOB])
    await h.persist(room.events.values())
    members = h.stores.members
    join = room.state[("m.room.member", BOB)]
    assert await members.get_rooms_for_user_with_stream_ordering(BOB) == frozenset(
        {(room.room_id, join.internal_metadata.stream_ordering)}
    )
    # Cached now: a second call runs no SQL.
    with StatementCounter(db) as counter:
        await members.get_rooms_for_user_with_stream_ordering(BOB)
        await members.get_users_in_room(room.room_id)
        await members.get_users_in_room(room.room_id)
    assert len(counter.statements) == 1

    room.member(BOB, "leave")
    await h.persist([room.events[room.last_event_id]])
    assert await members.get_rooms_for_user_with_stream_ordering(BOB) == frozenset()
    assert await members.get_users_in_room(room.room_id) == {room.creator}
    assert await members.get_membership_counts(room.room_id) == {"join": 1, "leave": 1}


@pytest_twisted.ensureDeferred
async def test_custom_state_keyed_by_a_user_id_is_not_a_membership(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[BOB])
    room.send("org.example.profile", room.creator, {"membership": "join"}, CAROL)
    room.send("org.example.profile", room.creator, {"membership": "leave"}, BOB)
    await h.persist(room.events.values())
    members = h.stores.members
    assert await members.get_users_in_room(room.room_id) == {room.creator, BOB}
    assert await members.get_rooms_for_user(CAROL) == frozenset()
    assert await members.get_rooms_for_user(BOB) == {room.room_id}
    assert await members.get_membership_counts(room.room_id) == {"join": 2}
    assert CAROL not in await members.get_room_heroes(room.room_id, room.creator)
    rows = await db.execute(
        "t", "SELECT membership FROM current_state_events WHERE type = 'org.example.profile'"
    )
    assert [r[0] for r in rows] == [None, None]


@pytest_twisted.ensureDeferred
async def test_heroes_prefer_joined_and_invited_members_in_stream_order(db):
    h = await StorageHarness.create(db)
    others = [f"@h{i}:example.org" for i in range(7)]
    room = standard_room(V10, members=others[:6])
    room.member(others[6], "invite", sender=room.creator)
    await h.persist(room.events.values())
    heroes = await h.stores.members.get_room_heroes(room.room_id, room.creator)
    assert heroes == others[:5]
    assert room.creator not in heroes
    assert await h.stores.members.get_membership_counts(room.room_id) == {"join": 7, "invite": 1}


@pytest_twisted.ensureDeferred
async def test_heroes_fall_back_to_users_who_left(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[BOB])
    room.member(BOB, "leave")
    await h.persist(room.events.values())
    assert await h.stores.members.get_room_heroes(room.room_id, room.creator) == [BOB]
    assert await h.stores.members.get_room_heroes(room.room_id, BOB) == [room.creator]


@pytest_twisted.ensureDeferred
async def test_local_membership_survives_current_state_cleanup(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[BOB, REMOTE])
    room.member(BOB, "leave")
    await h.persist(room.events.values())
    members = h.stores.members
    leave = room.state[("m.room.member", BOB)]
    got = await members.get_local_current_membership_for_user_in_room(BOB, room.room_id)
    assert (got.membership, got.event_id) == ("leave", leave.event_id)
    # Remote users are not tracked there.
    assert await members.get_local_current_membership_for_user_in_room(REMOTE, room.room_id) is None

    await db.execute("cleanup", "DELETE FROM current_state_events WHERE room_id = ?", room.room_id)
    left = await members.get_rooms_for_local_user_where_membership_is(BOB, ["leave"])
    assert [(r.room_id, r.membership, r.event_id, r.sender) for r in left] == [
        (room.room_id, "leave", leave.event_id, BOB)
    ]
    assert left[0].room_version_id == "10"
    assert await members.get_rooms_for_local_user_where_membership_is(BOB, ["join"]) == []
    joined = await members.get_rooms_for_local_user_where_membership_is(room.creator, ["join"])
    assert [r.room_id for r in joined] == [room.room_id]


@pytest_twisted.ensureDeferred
async def test_out_of_band_invite_is_a_local_membership(db):
    """An invite received over federation (an outlier) is recorded for the local user."""
    h = await StorageHarness.create(db)
    # A room we are not in: only its rooms row (from the invite) is stored.
    remote_room = standard_room(V10)
    await h.stores.rooms.store_room(remote_room.room_id, V10, remote_room.creator)
    invite = remote_room.member(BOB, "invite", sender=remote_room.creator)
    invite.internal_metadata.outlier = True
    invite.internal_metadata.out_of_band_membership = True
    await h.persister.persist_events([(invite, EventContext.for_outlier())])
    members = h.stores.members
    got = await members.get_local_current_membership_for_user_in_room(BOB, remote_room.room_id)
    assert got is not None and got.membership == "invite"
    invites = await members.get_rooms_for_local_user_where_membership_is(BOB, ["invite"])
    assert [r.event_id for r in invites] == [invite.event_id]
    # Not part of the room's current state: we are not in the room.
    assert await members.get_users_in_room(remote_room.room_id) == frozenset()


@pytest_twisted.ensureDeferred
async def test_current_state_filtered_reads(db):
    h = await StorageHarness.create(db)
    room = standard_room(V10, members=[BOB, CAROL])
    await h.persist(room.events.values())
    members = h.stores.members
    want = {("m.room.member", BOB): room.state[("m.room.member", BOB)].event_id}
    got = await members.get_filtered_current_state_ids(room.room_id, [("m.room.member", BOB)])
    assert dict(got) == want
    full = await members.get_current_state_ids(room.room_id)
    assert dict(full) == {k: e.event_id for k, e in room.state.items()}
    with StatementCounter(db) as counter:
        got = await members.get_filtered_current_state_ids(room.room_id, [("m.room.member", None)])
    assert counter.statements == []
    assert len(got) == 3
