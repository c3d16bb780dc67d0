"""TypingHandler with a fake clock: who is typing, timeouts, stream positions."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import task

from atrium.errors import Forbidden
from atrium.handlers.typing import MAX_TYPING_TIMEOUT_MS, TypingHandler
from atrium.util.clock import Clock

ROOM = "!room:test"
OTHER_ROOM = "!other:test"
ALICE = "@alice:test"
BOB = "@bob:test"


class Published:
    """Collects what the handler publishes (stream, token, rows)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, list[Any]]] = []

    async def __call__(self, stream: str, token: int, rows: Any) -> None:
        self.calls.append((stream, token, list(rows)))


def make_handler(start_seconds: float = 0.0, joined: set[tuple[str, str]] | None = None):
    reactor = task.Clock()
    reactor.advance(start_seconds)
    published = Published()
    members = joined if joined is not None else {(ALICE, ROOM), (BOB, ROOM), (ALICE, OTHER_ROOM)}

    async def is_joined(user_id: str, room_id: str) -> bool:
        return (user_id, room_id) in members

    return TypingHandler(Clock(reactor), is_joined, published), reactor, published


@pytest_twisted.ensureDeferred
async def test_typing_starts_publishes_and_expires_after_timeout():
    handler, reactor, published = make_handler()
    await handler.set_typing(ALICE, ALICE, ROOM, True, 10_000)
    assert handler.typing_users(ROOM) == [ALICE]
    assert published.calls[-1][0] == "typing"
    assert published.calls[-1][2][0].user_ids == [ALICE]
    started_at = handler.current_token()

    reactor.advance(9.9)
    assert handler.typing_users(ROOM) == [ALICE]
    reactor.advance(0.2)
    assert handler.typing_users(ROOM) == []
    # The expiry is itself a change clients must hear about.
    assert handler.current_token() == started_at + 1
    assert published.calls[-1][2][0].room_id == ROOM
    assert published.calls[-1][2][0].user_ids == []


@pytest_twisted.ensureDeferred
async def test_retyping_extends_timeout_without_moving_the_stream():
    handler, reactor, published = make_handler()
    await handler.started_typing(ALICE, ROOM, 10_000)
    token = handler.current_token()
    reactor.advance(8)
    await handler.started_typing(ALICE, ROOM, 10_000)
    assert handler.current_token() == token
    assert len(published.calls) == 1
    reactor.advance(5)  # past the first timeout, inside the second
    assert handler.typing_users(ROOM) == [ALICE]
    reactor.advance(6)
    assert handler.typing_users(ROOM) == []


@pytest_twisted.ensureDeferred
async def test_stop_typing_removes_user_and_cancels_timer():
    handler, reactor, published = make_handler()
    await handler.started_typing(ALICE, ROOM, 10_000)
    await handler.started_typing(BOB, ROOM, 10_000)
    assert handler.typing_users(ROOM) == [ALICE, BOB]
    await handler.set_typing(ALICE, ALICE, ROOM, False, 0)
    assert handler.typing_users(ROOM) == [BOB]
    assert published.calls[-1][2][0].user_ids == [BOB]
    calls = len(published.calls)
    # Stopping when not typing changes nothing.
    await handler.stopped_typing(ALICE, ROOM)
    assert len(published.calls) == calls
    assert not [c for c in reactor.getDelayedCalls() if c.args[0] == ALICE]


@pytest_twisted.ensureDeferred
async def test_timeout_is_capped():
    handler, reactor, _ = make_handler()
    await handler.started_typing(ALICE, ROOM, 10**12)
    reactor.advance(MAX_TYPING_TIMEOUT_MS / 1000 + 1)
    assert handler.typing_users(ROOM) == []


@pytest_twisted.ensureDeferred
async def test_only_yourself_and_only_when_joined():
    handler, _, published = make_handler()
    with pytest.raises(Forbidden):
        await handler.set_typing(ALICE, BOB, ROOM, True, 1000)
    with pytest.raises(Forbidden):
        await handler.set_typing(BOB, BOB, OTHER_ROOM, True, 1000)
    assert published.calls == []


@pytest_twisted.ensureDeferred
async def test_rooms_changed_since_and_catch_up_updates():
    handler, _, _ = make_handler()
    start = handler.current_token()
    await handler.started_typing(ALICE, ROOM, 10_000)
    middle = handler.current_token()
    await handler.started_typing(ALICE, OTHER_ROOM, 10_000)
    assert handler.rooms_changed_since([ROOM, OTHER_ROOM], start) == {
        ROOM: [ALICE],
        OTHER_ROOM: [ALICE],
    }
    assert handler.rooms_changed_since([ROOM, OTHER_ROOM], middle) == {OTHER_ROOM: [ALICE]}
    assert handler.rooms_changed_since([ROOM], handler.current_token()) == {}

    updates = handler.get_updates(start, handler.current_token(), 10)
    assert [row.room_id for _, row in updates.rows] == [ROOM, OTHER_ROOM]
    assert not updates.limited
    page = handler.get_updates(start, handler.current_token(), 1)
    assert page.limited and page.upto_token == middle


def test_positions_start_from_the_clock_so_they_survive_restarts():
    """A restarted writer must not hand out positions a client has already seen."""
    before, _, _ = make_handler(start_seconds=1000)
    assert before.current_token() == 1_000_000
    later, _, _ = make_handler(start_seconds=1001)
    assert later.current_token() > before.current_token()
