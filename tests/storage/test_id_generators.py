"""Stream ids: the current token never passes an id still being persisted."""

from __future__ import annotations

import pytest_twisted

from atrium.storage.id_generators import StreamIdGenerator, build_sequence_generator


def test_current_token_waits_for_earlier_unfinished_ids():
    gen = StreamIdGenerator(10)
    first = gen.get_next()
    a = first.__enter__()
    with gen.get_next() as b:
        assert (a, b) == (11, 12)
    # 12 finished, but 11 is still in flight: readers may only see 10.
    assert gen.get_current_token() == 10
    first.__exit__(None, None, None)
    assert gen.get_current_token() == 12


def test_negative_step_for_backfill():
    gen = StreamIdGenerator(0, step=-1)
    with gen.get_next_mult(3) as ids:
        assert ids == [-1, -2, -3]
        assert gen.get_current_token() == 0
    assert gen.get_current_token() == -3


@pytest_twisted.ensureDeferred
async def test_generators_start_after_stored_ids(db):
    def write(txn):
        txn.execute(
            "INSERT INTO state_groups (id, room_id, event_id) VALUES (?, ?, ?)", (41, "!r:x", "$e")
        )

    await db.run_interaction("write", write)
    seq = await build_sequence_generator(db, "state_group_id_seq", "state_groups", "id")
    ids = await db.run_interaction("alloc", seq.get_next_mult_txn, 3)
    assert len(set(ids)) == 3 and min(ids) > 41
    stream = await StreamIdGenerator.from_tables(db, [("state_groups", "id")])
    assert stream.get_current_token() == 41
