"""Pagination token text: topological positions round-trip, /sync tokens are
accepted, everything else is M_INVALID_PARAM."""

from __future__ import annotations

import pytest

from atrium.errors import MatrixError
from atrium.handlers.pagination_token import format_position, parse_pagination_token
from atrium.storage.stores.pagination import BEFORE_ALL, RoomPosition
from atrium.sync.token import RoomStreamToken, StreamToken


@pytest.mark.parametrize(
    "position", [RoomPosition(5, 17), RoomPosition(3, -40), BEFORE_ALL, RoomPosition(0, 0)]
)
def test_topological_positions_round_trip(position):
    text = format_position(position)
    assert text.startswith("t")
    assert parse_pagination_token(text) == position


def test_positions_order_by_depth_then_stream():
    assert RoomPosition(2, 1) < RoomPosition(2, 5) < RoomPosition(3, -10)
    assert RoomPosition(4, 9).just_before() == RoomPosition(4, 8)
    assert RoomPosition(4, 8) < RoomPosition(4, 9)


def test_sync_tokens_are_stream_tokens():
    token = StreamToken(RoomStreamToken(42), 1, 2)
    assert parse_pagination_token(token.to_string()) == token


@pytest.mark.parametrize(
    "text",
    [
        "",
        "t",
        "t1",
        "t1-",
        "tx-1",
        "t1-2-3",
        "s",
        "sx",
        "42",
        "t1-2 ",
        "t9999999999999999999-1",
        "s99999999999999999999_0",
        "sm1~w1.99999999999999999999",
    ],
)
def test_garbage_is_invalid_param(text):
    with pytest.raises(MatrixError) as caught:
        parse_pagination_token(text, "from")
    assert caught.value.errcode == "M_INVALID_PARAM"
