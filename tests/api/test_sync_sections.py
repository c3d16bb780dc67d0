"""The /sync contract with other domains: sections run after the rooms part
with a filled SyncRequest, and incremental syncs log their statistics."""

from __future__ import annotations

import logging
from typing import Any

import pytest_twisted

from atrium.sync.filtering import Filter
from atrium.sync.sections import SyncRequest, joined_room_entry
from atrium.sync.token import StreamToken
from tests.api.test_sync import V3, create_room, join, send, sync
from tests.support.client import q


class RecordingSection:
    """A section that adds data only when told to (a test double of a domain)."""

    def __init__(self) -> None:
        self.requests: list[SyncRequest] = []
        self.pending: dict[str, Any] | None = None

    async def fill(self, request: SyncRequest, response: dict[str, Any]) -> None:
        self.requests.append(request)
        if self.pending is not None:
            response["org.example.section"] = self.pending
            for room_id in request.joined_room_ids:
                joined_room_entry(response, room_id)["ephemeral"]["events"].append(
                    {"type": "org.example.ping", "content": {}}
                )


@pytest_twisted.ensureDeferred
async def test_sections_get_the_request_after_the_rooms_part(server):
    hs, anon = server
    section = RecordingSection()
    hs.sync_sections.append(section)
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    first = await sync(alice, filter={"room": {"timeline": {"limit": 3}}})
    request = section.requests[-1]
    assert request.user_id == alice.user_id and request.device_id == alice.device_id
    assert request.since is None and request.is_initial
    assert request.now.to_string() == first["next_batch"]
    assert request.joined_room_ids == {room_id}
    assert isinstance(request.filter, Filter) and request.filter.timeline_limit == 3
    assert "org.example.section" not in first

    # An incremental sync: the section's data alone makes the response
    # non-empty; the rooms part gives it the joined rooms.
    section.pending = {"n": 1}
    body = await sync(alice, since=first["next_batch"], timeout=5_000)
    assert body["org.example.section"] == {"n": 1}
    assert body["rooms"]["join"][room_id]["ephemeral"]["events"][0]["type"] == "org.example.ping"
    request = section.requests[-1]
    assert request.since == StreamToken.parse(first["next_batch"])
    assert request.since_key("typing") == request.since.typing

    # Newly joined and left rooms are reported to sections.
    section.pending = None
    since = body["next_batch"]
    other = await create_room(bob, preset="public_chat")
    await join(alice, other)
    assert (await alice.post(f"{V3}/rooms/{q(room_id)}/leave")).code == 200
    await send(bob, other, "hi")
    await sync(alice, since=since)
    request = section.requests[-1]
    assert request.newly_joined_room_ids == {other}
    assert request.newly_left_room_ids == {room_id}
    assert request.joined_room_ids == {other}


@pytest_twisted.ensureDeferred
async def test_incremental_sync_logs_its_statistics(server, caplog):
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await create_room(alice)
    since = (await sync(alice))["next_batch"]
    await send(alice, room_id, "one")
    await send(alice, room_id, "two")
    with caplog.at_level(logging.INFO, logger="atrium.sync.handler"):
        await sync(alice, since=since)
    lines = [r.getMessage() for r in caplog.records if r.name == "atrium.sync.handler"]
    assert len(lines) == 1
    assert alice.user_id in lines[0]
    assert "1 rooms, 2 events" in lines[0] and " ms" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="atrium.sync.handler"):
        await sync(alice)
    # Initial syncs are not logged this way.
    assert not [r for r in caplog.records if r.name == "atrium.sync.handler"]
