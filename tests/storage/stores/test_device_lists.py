"""DeviceListStore: one id generator over every device-list table, and stream paging."""

from __future__ import annotations

import pytest_twisted

from atrium.replication.streams.device_lists import DeviceListsStreamRow, page_of_rows
from atrium.storage.stores.device_lists import DeviceListStore
from atrium.storage.stores.to_device import ToDeviceStore


@pytest_twisted.ensureDeferred
async def test_generator_starts_past_outbound_pokes_written_without_stream_rows(db):
    store = await DeviceListStore.create(db)
    first = await store.add_device_change("@a:here", ["D1"], ["one.example"], 1)
    pokes_only = await store.add_outbound_pokes("@a:here", ["D1"], ["two.example"], 2)
    signature = await store.add_user_signature_change("@a:here", ["@b:here"])
    assert (first, pokes_only, signature) == (1, 2, 3)
    max_stream = await db.execute("t", "SELECT MAX(stream_id) FROM device_lists_stream")
    assert max_stream == [(1,)]

    # A restarted process must not reuse positions 2 and 3, which only the
    # pokes and signature tables hold.
    restarted = await DeviceListStore.create(db)
    assert restarted.get_device_stream_token() == 3
    assert await restarted.add_device_change("@c:here", ["D9"], [], 4) == 4

    updates = await restarted.get_all_updates(0, 4, 100)
    assert updates == [
        (1, "@a:here"),
        (1, "one.example"),
        (2, "two.example"),
        (3, "@a:here"),
        (4, "@c:here"),
    ]
    assert await restarted.get_users_whose_devices_changed(1, 4) == {"@c:here"}
    assert await restarted.get_users_whose_signatures_changed("@a:here", 0, 4) == {"@b:here"}
    assert await restarted.get_outbound_pokes("one.example", 0) == [(1, "@a:here", "D1")]


@pytest_twisted.ensureDeferred
async def test_to_device_generator_covers_the_federation_outbox(db):
    store = await ToDeviceStore.create(db)
    sid = await store.add_messages("@s:here", "SD", "t1", "m.x", {}, {"far.example": {}}, 0)
    assert sid == 1
    restarted = await ToDeviceStore.create(db)
    assert restarted.get_to_device_stream_token() == 1
    # The transaction ID is remembered: a retry writes nothing.
    assert await restarted.add_messages("@s:here", "SD", "t1", "m.x", {}, {}, 0) is None


def test_a_cut_page_never_splits_a_position():
    rows = [
        (1, DeviceListsStreamRow("a")),
        (2, DeviceListsStreamRow("b")),
        (2, DeviceListsStreamRow("c")),
    ]
    cut = page_of_rows(rows, 9, 3)
    assert (cut.rows, cut.upto_token, cut.limited) == (rows[:1], 1, True)
    whole = page_of_rows(rows, 9, 4)
    assert (whole.rows, whole.upto_token, whole.limited) == (rows, 9, False)
    # One position bigger than the page still makes progress.
    same = [(5, DeviceListsStreamRow("x")), (5, DeviceListsStreamRow("y"))]
    assert page_of_rows(same, 9, 2).upto_token == 5


@pytest_twisted.ensureDeferred
async def test_devices_changed_together_get_their_own_stream_ids(db):
    """An m.device_list_update's stream_id is unique per user, so devices
    changed together (logout/all) are poked at distinct, increasing IDs; the
    stream gets one row for the user, at the last of them."""
    store = await DeviceListStore.create(db)
    last = await store.add_device_change("@a:here", ["D2", "D1", "D3"], ["one.example"], 1)
    pokes = await store.get_outbound_pokes("one.example", 0)
    assert pokes == [(1, "@a:here", "D1"), (2, "@a:here", "D2"), (3, "@a:here", "D3")]
    assert last == 3 == store.get_device_stream_token()
    assert await store.get_all_updates(0, 3, 100) == [(3, "@a:here"), (3, "one.example")]
    more = await store.add_outbound_pokes("@a:here", ["D5", "D4"], ["two.example"], 2)
    assert more == 5
    assert await store.get_outbound_pokes("two.example", 0) == [
        (4, "@a:here", "D4"),
        (5, "@a:here", "D5"),
    ]
