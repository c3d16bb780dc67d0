"""Push rules evaluated when events are persisted, on both engines: stored
actions, /sync unread_notifications reset by a receipt, GET /notifications."""

from __future__ import annotations

import pytest_twisted

from tests.api.sync_sections_helper import shared_room
from tests.support.client import q

V3 = "/_matrix/client/v3"


_txn = iter(range(1_000_000))


async def send(client, room_id: str, body: str, **content) -> str:
    resp = await client.put(
        f"{V3}/rooms/{q(room_id)}/send/m.room.message/t{next(_txn)}",
        {"msgtype": "m.text", "body": body, **content},
    )
    assert resp.code == 200, resp
    return resp.json["event_id"]


async def stored_actions(hs, event_id: str) -> dict[str, tuple[bool, bool]]:
    rows = await hs.db.execute(
        "test",
        "SELECT user_id, notif, highlight FROM event_push_actions WHERE event_id = ?",
        event_id,
    )
    return {r[0]: (bool(r[1]), bool(r[2])) for r in rows}


async def unread(client, room_id: str, since: str | None = None) -> tuple[dict | None, str]:
    path = f"{V3}/sync?timeout=0" + (f"&since={q(since)}" if since else "")
    resp = await client.get(path)
    assert resp.code == 200, resp
    entry = resp.json.get("rooms", {}).get("join", {}).get(room_id)
    return (entry["unread_notifications"] if entry else None), resp.json["next_batch"]


@pytest_twisted.ensureDeferred
async def test_default_rules_notify_mention_highlights_sender_never_notified(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    room_id = await shared_room(alice, bob)
    hello = await send(bob, room_id, "hello")
    # Two members: .m.rule.room_one_to_one notifies alice; bob sent it.
    assert await stored_actions(hs, hello) == {alice.user_id: (True, False)}
    mention = await send(bob, room_id, "hey Alice", **{"m.mentions": {"user_ids": [alice.user_id]}})
    assert await stored_actions(hs, mention) == {alice.user_id: (True, True)}
    notice = await send(bob, room_id, "beep", msgtype="m.notice")
    assert await stored_actions(hs, notice) == {}

    # .m.rule.master enabled: nothing notifies any more.
    master = await alice.put(
        f"{V3}/pushrules/global/override/.m.rule.master/enabled", {"enabled": True}
    )
    assert master.code == 200, master
    quiet = await send(bob, room_id, "anyone?")
    assert await stored_actions(hs, quiet) == {}


@pytest_twisted.ensureDeferred
async def test_custom_override_rule_with_display_name_highlights(server):
    hs, anon = server
    alice = await anon.register("carol")
    bob = await anon.register("dave")
    room_id = await shared_room(alice, bob)
    name = await alice.put(
        f"{V3}/profile/{q(alice.user_id)}/displayname", {"displayname": "Carol Cat"}
    )
    assert name.code == 200
    rule = await alice.put(
        f"{V3}/pushrules/global/override/my-name",
        {
            "conditions": [{"kind": "contains_display_name"}],
            "actions": ["notify", {"set_tweak": "highlight"}, {"set_tweak": "sound", "value": "x"}],
        },
    )
    assert rule.code == 200, rule
    named = await send(bob, room_id, "ask carol cat!")
    assert await stored_actions(hs, named) == {alice.user_id: (True, True)}
    other = await send(bob, room_id, "ask carol catherine")
    assert await stored_actions(hs, other) == {alice.user_id: (True, False)}
    # A rule silencing one sender (room rule kinds work too).
    silence = await alice.put(f"{V3}/pushrules/global/sender/{q(bob.user_id)}", {"actions": []})
    assert silence.code == 200
    assert await stored_actions(hs, await send(bob, room_id, "shh")) == {}


@pytest_twisted.ensureDeferred
async def test_sync_counts_reset_by_receipt_and_notifications_list(server):
    hs, anon = server
    alice = await anon.register("erin")
    bob = await anon.register("frank")
    room_id = await shared_room(alice, bob)
    counts, since = await unread(alice, room_id)
    assert counts == {"notification_count": 0, "highlight_count": 0}
    first = await send(bob, room_id, "one")
    await send(bob, room_id, "two", **{"m.mentions": {"user_ids": [alice.user_id]}})
    counts, since = await unread(alice, room_id, since)
    assert counts == {"notification_count": 2, "highlight_count": 1}
    # Bob's own messages never count for him.
    bob_counts, _ = await unread(bob, room_id)
    assert bob_counts == {"notification_count": 0, "highlight_count": 0}

    listed = await alice.get(f"{V3}/notifications")
    assert listed.code == 200, listed
    notes = listed.json["notifications"]
    assert [n["event"]["content"]["body"] for n in notes] == ["two", "one"]
    assert [n["read"] for n in notes] == [False, False]
    assert notes[0]["room_id"] == room_id and "highlight" in str(notes[0]["actions"])
    only = await alice.get(f"{V3}/notifications?only=highlight")
    assert [n["event"]["content"]["body"] for n in only.json["notifications"]] == ["two"]
    page = await alice.get(f"{V3}/notifications?limit=1")
    assert len(page.json["notifications"]) == 1
    rest = await alice.get(f"{V3}/notifications?from={page.json['next_token']}")
    assert [n["event"]["content"]["body"] for n in rest.json["notifications"]] == ["one"]

    # A receipt on the first: one left; a private receipt on the latest: none.
    receipt = await alice.post(f"{V3}/rooms/{q(room_id)}/receipt/m.read/{q(first)}", {})
    assert receipt.code == 200
    counts, since = await unread(alice, room_id, since)
    assert counts == {"notification_count": 1, "highlight_count": 1}
    latest = notes[0]["event"]["event_id"]
    private = await alice.post(f"{V3}/rooms/{q(room_id)}/receipt/m.read.private/{q(latest)}", {})
    assert private.code == 200
    counts, since = await unread(alice, room_id, since)
    assert counts == {"notification_count": 0, "highlight_count": 0}
    reread = await alice.get(f"{V3}/notifications")
    assert [n["read"] for n in reread.json["notifications"]] == [True, True]
    bad = await alice.get(f"{V3}/notifications?from=nope")
    assert bad.code == 400 and bad.json["errcode"] == "M_INVALID_PARAM"


@pytest_twisted.ensureDeferred
async def test_v12_creator_room_mention_notifies_everyone(server):
    """@room needs the sender's power level >= notifications.room (50): a v12
    creator is not listed in the power levels but has an infinite level; a
    member at the default 0 does not have it."""
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    carol = await anon.register("carol")
    created = await alice.post(f"{V3}/createRoom", {"room_version": "12", "preset": "public_chat"})
    assert created.code == 200, created
    room_id = created.json["room_id"]
    for other in (bob, carol):
        assert (await other.post(f"{V3}/join/{q(room_id)}")).code == 200
    everyone = {"m.mentions": {"room": True}}
    by_creator = await send(alice, room_id, "@room hello", **everyone)
    assert await stored_actions(hs, by_creator) == {
        bob.user_id: (True, True),
        carol.user_id: (True, True),
    }
    by_member = await send(bob, room_id, "@room hi", **everyone)
    assert all(not highlight for _, highlight in (await stored_actions(hs, by_member)).values())
