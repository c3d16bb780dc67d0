"""RoomStore: room versions and publicity, cached, with stale answers invalidated."""

from __future__ import annotations

import pytest
import pytest_twisted

from atrium.events.room_versions import V1, V10
from atrium.storage.stores.errors import NotFoundError, UnsupportedRoomVersionError
from tests.storage.harness import StatementCounter, StorageHarness
from tests.support.events import RoomBuilder

ROOM = "!r:example.org"


@pytest_twisted.ensureDeferred
async def test_room_version_is_cached_and_fixed_at_creation(db):
    h = await StorageHarness.create(db)
    rooms = h.stores.rooms
    with pytest.raises(NotFoundError):
        await rooms.get_room_version(ROOM)
    # The "unknown" answer above was cached; storing the room invalidates it.
    await rooms.store_room(ROOM, V10, "@a:example.org")
    assert await rooms.get_room_version(ROOM) == V10
    with StatementCounter(db) as counter:
        assert await rooms.get_room_version(ROOM) == V10
    assert counter.statements == []
    # A second store_room never changes the version.
    await rooms.store_room(ROOM, V1, "@b:example.org")
    info = await rooms.get_room(ROOM)
    assert (info.room_version_id, info.creator, info.is_public) == ("10", "@a:example.org", False)
    assert await rooms.get_room_version_ids([ROOM, "!other:x"]) == {ROOM: "10"}


@pytest_twisted.ensureDeferred
async def test_persisting_the_create_event_records_the_room(db):
    h = await StorageHarness.create(db)
    room = RoomBuilder(V10, room_id=ROOM)
    assert await h.stores.rooms.get_room_version_id(ROOM) is None
    room.create()
    await h.persist(room.events.values())
    assert await h.stores.rooms.get_room_version(ROOM) == V10


@pytest_twisted.ensureDeferred
async def test_unsupported_stored_version_is_an_error(db):
    h = await StorageHarness.create(db)
    await db.execute(
        "t", "INSERT INTO rooms (room_id, room_version, is_public) VALUES (?, ?, FALSE)", ROOM, "x9"
    )
    with pytest.raises(UnsupportedRoomVersionError):
        await h.stores.rooms.get_room_version(ROOM)


@pytest_twisted.ensureDeferred
async def test_publicity_changes_are_seen_through_the_cache(db):
    h = await StorageHarness.create(db)
    rooms = h.stores.rooms
    await rooms.store_room(ROOM, V10, None)
    assert not await rooms.is_room_public(ROOM)
    await rooms.set_room_is_public(ROOM, True)
    assert await rooms.is_room_public(ROOM)
    assert await rooms.get_public_room_ids() == [ROOM]
    assert ("is_room_public", [(ROOM,)]) in h.invalidator.calls
