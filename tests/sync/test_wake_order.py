"""The seeds' invariant: caches are invalidated BEFORE the notifier wakes /sync.

``ReplicationDataHandler.on_rows`` applies a batch of stream rows in three
steps: invalidate caches, advance the position, wake the notifier. A /sync
long-poll woken by a membership row reads ``get_rooms_for_user_with_stream_ordering``;
if the notifier ran first, that read would hit the stale cached room list.

These tests deliver an events row the way another process's write arrives
(the local write path did NOT invalidate anything, exactly as on a process
that did not write the event) and check the woken /sync, with the real
handler and with one that wakes before invalidating.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from atrium.replication.handler import ReplicationDataHandler
from atrium.replication.streams.events import EventsStreamRow, row_for_event
from atrium.storage.persistence import build_event_persister
from tests.api.test_sync import create_room, sync


class NotifyFirstHandler(ReplicationDataHandler):
    """The wrong order: advance and wake, and only then invalidate."""

    async def on_rows(self, stream_name: str, instance: str, token: int, rows: Any) -> None:
        effects = await self.streams[stream_name].effects(rows)
        self.set_position(stream_name, instance, token)
        self.notifier.on_new_data(stream_name, token, effects.users, effects.rooms)
        for cache_name, keys in effects.invalidations:
            for key in keys or ():
                self._invalidate(cache_name, key)


class _NoInvalidation:
    def invalidate(self, cache_name: str, keys: Any) -> None:
        """A write on another process: nothing here is invalidated by it."""

    def invalidate_local(self, cache_name: str, keys: Any) -> None:
        """Likewise."""


class _RecordingNotifier:
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def on_new_data(self, stream: str, token: Any, users: Any = (), rooms: Any = ()) -> None:
        self.log.append(("notify", stream, token, sorted(users), sorted(rooms)))


async def _remote_join_while_polling(
    hs: Any, anon: Any, handler_class: type
) -> tuple[list[set[str]], dict[str, Any], str]:
    """The joined rooms of each /sync computation after the join row arrives."""
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    await create_room(bob)
    room_id = await create_room(alice, preset="public_chat")
    since = (await sync(bob))["next_batch"]
    # The room list is cached, without the new room.
    cached = hs.stores.members.get_rooms_for_user_with_stream_ordering.cache.get_if_cached(
        (bob.user_id,)
    )
    assert room_id not in {r for r, _ in cached}

    handler = handler_class(hs.streams, hs.cache_registry.invalidate, hs.notifier)
    handler.positions = hs.data_handler.positions
    hs.data_handler = handler

    computations: list[set[str]] = []
    build = hs.sync_handler.rooms.build

    async def recording_build(req: Any, response: dict) -> Any:
        stats = await build(req, response)
        computations.append(set(response.get("rooms", {}).get("join", {})))
        return stats

    hs.sync_handler.rooms.build = recording_build
    poll = defer.ensureDeferred(sync(bob, since=since, timeout=1_000))
    await deferLater(reactor, 0.1, lambda: None)
    event, context = await hs.event_creation.create_event(
        {
            "type": "m.room.member",
            "room_id": room_id,
            "sender": bob.user_id,
            "state_key": bob.user_id,
            "content": {"membership": "join"},
        }
    )
    remote = build_event_persister(
        attrs.evolve(hs.stores, invalidator=_NoInvalidation()),
        clock=hs.clock,
        instance_name=hs.instance_name,
        is_mine=hs.is_mine,
    )
    token = await remote.persist_events([(event, context)])
    assert not poll.called
    await handler.on_rows("events", hs.instance_name, token, [row_for_event(event)])
    response = await poll
    return computations, response, room_id


@pytest_twisted.ensureDeferred
async def test_woken_sync_sees_room_joined_on_another_process(server):
    hs, anon = server
    computations, response, room_id = await _remote_join_while_polling(
        hs, anon, ReplicationDataHandler
    )
    # The computation the wake-up started already has the room: no waiting on.
    assert computations == [{room_id}]
    assert room_id in response["rooms"]["join"]


@pytest_twisted.ensureDeferred
async def test_waking_before_invalidating_would_serve_the_stale_room_list(server):
    """Proof the test above can fail: with the order swapped the room is missed."""
    hs, anon = server
    computations, response, room_id = await _remote_join_while_polling(hs, anon, NotifyFirstHandler)
    # Woken, it read the stale room list: the room is missing from what it
    # computed (and, if another section had news, from what it answered).
    assert computations[0] == set()
    if len(computations) == 1:
        assert room_id not in response.get("rooms", {}).get("join", {})


def _membership_row(user_id: str, room_id: str) -> EventsStreamRow:
    return EventsStreamRow("$join", room_id, "m.room.member", user_id, user_id, "join", None, False)


async def _order_of(handler_class: type) -> list[Any]:
    from atrium.replication.streams.events import EventsStream

    log: list[Any] = []

    def invalidate(cache_name: str, key: Any) -> None:
        log.append(("invalidate", cache_name, key))

    handler = handler_class({"events": EventsStream(hs=None)}, invalidate, _RecordingNotifier(log))
    await handler.on_rows("events", "master", 7, [_membership_row("@u:hs", "!r:hs")])
    return log


def _invalidated_before_notify(log: list[Any]) -> bool:
    notify_at = next(i for i, entry in enumerate(log) if entry[0] == "notify")
    rooms_at = log.index(("invalidate", "get_rooms_for_user_with_stream_ordering", ("@u:hs",)))
    return rooms_at < notify_at


@pytest_twisted.ensureDeferred
async def test_replication_handler_invalidates_before_notifying():
    log = await _order_of(ReplicationDataHandler)
    assert _invalidated_before_notify(log)
    assert log[-1] == ("notify", "events", 7, ["@u:hs"], ["!r:hs"])
    # The same check flags the swapped order.
    assert not _invalidated_before_notify(await _order_of(NotifyFirstHandler))
