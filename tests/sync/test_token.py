"""StreamToken text and the vector events position of several events writers."""

from __future__ import annotations

import pytest

from atrium.errors import MatrixError
from atrium.sync.token import RoomStreamToken, StreamToken


@pytest.mark.parametrize(
    "instances",
    [
        {"event_writer1": 30},
        {"event_writer1": 30, "event_writer2": 41},
        {"a.b~c_d-e": 32, "é": 33},
    ],
)
def test_vector_tokens_round_trip_whatever_the_worker_names(instances):
    token = StreamToken(RoomStreamToken(25, instances), 1, 2, 3, 4, 5, 6)
    text = token.to_string()
    # "_" separates the streams: names must not leak their own separators.
    assert text.count("_") == 6
    assert StreamToken.parse(text) == token


@pytest.mark.parametrize(
    "text", ["sm5~w.x_0", "sm5~.3_0", "sm5~w-5f.3_0", "sm5~w-ZZ.3_0", "sm5~w!.3_0", "sm5~w3_0"]
)
def test_malformed_writer_positions_are_invalid_params(text):
    with pytest.raises(MatrixError):
        StreamToken.parse(text)


def test_an_event_is_in_a_vector_token_by_its_own_writers_position():
    token = RoomStreamToken(10, {"w2": 15})
    assert token.includes(10, "w1") and not token.includes(11, "w1")
    assert token.includes(15, "w2") and not token.includes(16, "w2")
    assert token.is_ambiguous(12) and not token.is_ambiguous(10) and not token.is_ambiguous(16)


def test_join_takes_each_writers_later_position():
    a = RoomStreamToken(5, {"w1": 8})
    b = RoomStreamToken(7, {"w2": 9})
    joined = a.join(b)
    assert joined == RoomStreamToken(7, {"w1": 8, "w2": 9})
    assert joined.covers(a) and joined.covers(b)
    assert not a.covers(joined) and not b.covers(joined)
    full_a = StreamToken(a, typing=3)
    full_b = StreamToken(b, typing=1, receipts=4)
    assert full_a.join(full_b) == StreamToken(joined, typing=3, receipts=4)
