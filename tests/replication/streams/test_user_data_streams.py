"""The typing, receipts, account_data and presence streams on a real
server: positions advance with writes, catch-up reads return the written
rows, and rows invalidate caches that exist."""

from __future__ import annotations

import pytest_twisted

from tests.api.sync_sections_helper import shared_room
from tests.support.client import q

V3 = "/_matrix/client/v3"


@pytest_twisted.ensureDeferred
async def test_streams_catch_up_and_name_registered_caches(server):
    hs, anon = server
    alice = await anon.register("alice")
    room_id = await shared_room(alice)
    sent = await alice.put(f"{V3}/rooms/{q(room_id)}/send/m.room.message/1", {"body": "x"})
    event_id = sent.json["event_id"]
    writer = hs.instance_name
    start = {name: hs.streams[name].current_token(writer) for name in hs.streams}

    user = q(alice.user_id)
    assert (await alice.put(f"{V3}/rooms/{q(room_id)}/typing/{user}", {"typing": True})).code == 200
    assert (
        await alice.post(f"{V3}/rooms/{q(room_id)}/receipt/m.read/{q(event_id)}", {})
    ).code == 200
    assert (await alice.put(f"{V3}/user/{user}/account_data/org.x", {"a": 1})).code == 200
    assert (
        await alice.put(f"{V3}/pushrules/global/sender/{q('@s:x')}", {"actions": []})
    ).code == 200
    assert (await alice.put(f"{V3}/presence/{user}/status", {"presence": "online"})).code == 200

    expected = {
        "typing": [(room_id, [alice.user_id])],
        "receipts": [(room_id, "m.read", alice.user_id, event_id)],
        "account_data": [
            (alice.user_id, None, "org.x"),
            (alice.user_id, None, "m.push_rules"),
        ],
        "presence": [(alice.user_id, "online")],
    }
    for name, rows in expected.items():
        stream = hs.streams[name]
        end = stream.current_token(writer)
        assert end > start[name], name
        # What the client token reports is what the writer reached.
        assert getattr(hs.current_token(), name) == end, name
        updates = await stream.get_updates(writer, start[name], end, 100)
        assert not updates.limited and updates.upto_token == end
        got = [tuple(row.to_json())[: len(rows[0])] for _, row in updates.rows]
        assert got == rows, name
        # Rows survive the JSON round trip other processes use.
        for _, row in updates.rows:
            assert stream.parse_row(row.to_json()) == row
        effects = await stream.effects([row for _, row in updates.rows])
        for cache_name, _keys in effects.invalidations:
            assert cache_name in hs.cache_registry, cache_name
        assert effects.users or effects.rooms, name
    page = await hs.streams["account_data"].get_updates(
        writer, start["account_data"], hs.streams["account_data"].current_token(writer), 1
    )
    assert page.limited and len(page.rows) == 1
