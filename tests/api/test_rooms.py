"""Room writes over HTTP: createRoom, send (idempotent per txn ID), state, membership, redaction."""

from __future__ import annotations

import pytest_twisted

from tests.support.client import q

V3 = "/_matrix/client/v3"


@pytest_twisted.ensureDeferred
async def test_create_room_send_and_membership_flow(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    created = await alice.post(
        f"{V3}/createRoom",
        {"name": "Hall", "topic": "t", "preset": "private_chat", "room_alias_name": "hall"},
    )
    assert created.code == 200, created
    room_id = created.json["room_id"]
    assert created.json["room_alias"] == "#hall:test.local"

    # Bob cannot send or join an invite-only room uninvited.
    denied = await bob.put(
        f"{V3}/rooms/{q(room_id)}/send/m.room.message/t1", {"msgtype": "m.text", "body": "hi"}
    )
    assert denied.code == 403 and denied.json["errcode"] == "M_FORBIDDEN"
    assert (await bob.post(f"{V3}/join/{q('#hall:test.local')}")).code == 403

    assert (
        await alice.post(f"{V3}/rooms/{q(room_id)}/invite", {"user_id": bob.user_id})
    ).code == 200
    joined = await bob.post(f"{V3}/join/{q('#hall:test.local')}")
    assert joined.code == 200 and joined.json["room_id"] == room_id

    first = await bob.put(
        f"{V3}/rooms/{q(room_id)}/send/m.room.message/t1", {"msgtype": "m.text", "body": "hi"}
    )
    again = await bob.put(
        f"{V3}/rooms/{q(room_id)}/send/m.room.message/t1", {"msgtype": "m.text", "body": "hi"}
    )
    assert first.code == 200 and again.json["event_id"] == first.json["event_id"]
    other = await bob.put(
        f"{V3}/rooms/{q(room_id)}/send/m.room.message/t2", {"msgtype": "m.text", "body": "hi"}
    )
    assert other.json["event_id"] != first.json["event_id"]

    # Bob (power 0) cannot change the name (needs 50) but alice can.
    assert (await bob.put(f"{V3}/rooms/{q(room_id)}/state/m.room.name", {"name": "x"})).code == 403
    assert (
        await alice.put(f"{V3}/rooms/{q(room_id)}/state/m.room.name", {"name": "New"})
    ).code == 200
    state = await hs.stores.members.get_current_state_ids(room_id)
    name_event = await hs.stores.events.get_event(state[("m.room.name", "")])
    assert name_event.content == {"name": "New"}

    # Redaction: bob may not redact alice's event; alice (moderator) may redact bob's.
    assert (
        await bob.put(f"{V3}/rooms/{q(room_id)}/redact/{q(name_event.event_id)}/r1", {})
    ).code == 403
    red = await alice.put(
        f"{V3}/rooms/{q(room_id)}/redact/{q(first.json['event_id'])}/r2", {"reason": "spam"}
    )
    assert red.code == 200, red
    redacted = await hs.stores.events.get_event(first.json["event_id"])
    assert redacted.content == {}
    # Clients see which redaction removed it (unsigned.redacted_because), in
    # every read path: /event, /messages and /sync.
    served = await alice.get(f"{V3}/rooms/{q(room_id)}/event/{q(first.json['event_id'])}")
    messages = await alice.get(
        f"{V3}/rooms/{q(room_id)}/messages", query={"dir": "b", "limit": "50"}
    )
    synced = await alice.get(f"{V3}/sync")
    timeline = synced.json["rooms"]["join"][room_id]["timeline"]["events"]
    for copy in (
        served.json,
        next(e for e in messages.json["chunk"] if e["event_id"] == first.json["event_id"]),
        *[e for e in timeline if e["event_id"] == first.json["event_id"]],
    ):
        because = copy["unsigned"]["redacted_because"]
        assert because["event_id"] == red.json["event_id"]
        assert because["sender"] == alice.user_id and because["content"]["reason"] == "spam"
        assert copy["content"] == {}

    assert (
        await alice.post(f"{V3}/rooms/{q(room_id)}/kick", {"user_id": bob.user_id, "reason": "bye"})
    ).code == 200
    assert bob.user_id not in await hs.stores.members.get_users_in_room(room_id)
    assert (await alice.post(f"{V3}/rooms/{q(room_id)}/ban", {"user_id": bob.user_id})).code == 200
    assert (await bob.post(f"{V3}/rooms/{q(room_id)}/join")).code == 403
    assert (
        await alice.post(f"{V3}/rooms/{q(room_id)}/unban", {"user_id": bob.user_id})
    ).code == 200
    assert (await bob.post(f"{V3}/rooms/{q(room_id)}/forget")).code == 200


@pytest_twisted.ensureDeferred
async def test_create_room_bad_inputs(server):
    hs, anon = server
    alice = await anon.register("carl")
    bad_version = await alice.post(f"{V3}/createRoom", {"room_version": "999"})
    assert bad_version.code == 400 and bad_version.json["errcode"] == "M_UNSUPPORTED_ROOM_VERSION"
    bad_invite = await alice.post(f"{V3}/createRoom", {"invite": "nope"})
    assert bad_invite.code == 400 and bad_invite.json["errcode"] == "M_BAD_JSON"
    await alice.post(f"{V3}/createRoom", {"room_alias_name": "taken"})
    taken = await alice.post(f"{V3}/createRoom", {"room_alias_name": "taken"})
    assert taken.code == 400 and taken.json["errcode"] == "M_ROOM_IN_USE"
    unknown = await alice.put(
        f"{V3}/rooms/{q('!nope:test.local')}/send/m.room.message/x", {"body": "x"}
    )
    assert unknown.code == 404 and unknown.json["errcode"] == "M_NOT_FOUND"
    big = await alice.post(f"{V3}/createRoom", {})
    room_id = big.json["room_id"]
    too_large = await alice.put(
        f"{V3}/rooms/{q(room_id)}/send/m.room.message/big", {"body": "x" * 70000}
    )
    assert too_large.code == 413 and too_large.json["errcode"] == "M_TOO_LARGE"


@pytest_twisted.ensureDeferred
async def test_every_room_version_can_be_created_and_used(server):
    from atrium.events.room_versions import KNOWN_ROOM_VERSIONS

    hs, anon = server
    alice = await anon.register("vera")
    for version in KNOWN_ROOM_VERSIONS:
        created = await alice.post(
            f"{V3}/createRoom", {"room_version": version, "preset": "public_chat"}
        )
        assert created.code == 200, (version, created)
        sent = await alice.put(
            f"{V3}/rooms/{q(created.json['room_id'])}/send/m.room.message/{version}", {"body": "v"}
        )
        assert sent.code == 200, (version, sent)


@pytest_twisted.ensureDeferred
async def test_nul_characters_are_refused_not_500(server):
    hs, anon = server
    alice = await anon.register("nul")
    room_id = (await alice.post(f"{V3}/createRoom", {})).json["room_id"]
    in_path = await alice.put(f"{V3}/rooms/{q(room_id)}/state/m.custom/{q('a' + chr(0))}", {"x": 1})
    assert in_path.code == 400 and in_path.json["errcode"] == "M_INVALID_PARAM"
    in_type = await alice.put(f"{V3}/rooms/{q(room_id)}/send/{q('m.x' + chr(0))}/t", {"x": 1})
    assert in_type.code == 400
    in_content = await alice.put(
        f"{V3}/rooms/{q(room_id)}/send/m.room.message/t2", {"body": "a\u0000b"}
    )
    assert in_content.code == 200


@pytest_twisted.ensureDeferred
async def test_concurrent_joins_and_sends_in_one_room_stay_linear(server):
    """A burst of joins and sends in one room builds one chain: every sender is
    joined in the state its event is checked against, and the room ends with a
    single forward extremity."""
    from twisted.internet import defer

    hs, anon = server
    owner = await anon.register("owner")
    room_id = (await owner.post(f"{V3}/createRoom", {"preset": "public_chat"})).json["room_id"]
    users = [await anon.register(f"user{i}") for i in range(15)]
    joins = await defer.gatherResults(
        [defer.ensureDeferred(u.post(f"{V3}/rooms/{q(room_id)}/join")) for u in users]
    )
    assert [r.code for r in joins] == [200] * 15
    sends = await defer.gatherResults(
        [
            defer.ensureDeferred(
                u.put(f"{V3}/rooms/{q(room_id)}/send/m.room.message/t", {"body": "hi"})
            )
            for u in users
        ]
    )
    assert [r.code for r in sends] == [200] * 15
    assert len(await hs.stores.events.get_latest_event_ids_in_room(room_id)) == 1
    assert len(await hs.stores.members.get_users_in_room(room_id)) == 16


@pytest_twisted.ensureDeferred
async def test_state_events_carry_prev_content_for_clients(server):
    hs, anon = server
    alice = await anon.register("pc")
    room_id = (await alice.post(f"{V3}/createRoom", {"name": "one"})).json["room_id"]
    second = await alice.put(f"{V3}/rooms/{q(room_id)}/state/m.room.name", {"name": "two"})
    served = await alice.get(f"{V3}/rooms/{q(room_id)}/event/{q(second.json['event_id'])}")
    assert served.json["unsigned"]["prev_content"] == {"name": "one"}
    assert served.json["unsigned"]["replaces_state"]
    event = await hs.stores.events.get_event(second.json["event_id"])
    assert (
        "unsigned" not in event.get_pdu_json()
        or "prev_content" not in event.get_pdu_json()["unsigned"]
    )
