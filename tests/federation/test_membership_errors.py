"""Bad membership requests between two real servers: the resident server
answers with a clear Matrix error and stores nothing (make_join for a room
it is not in, an incompatible room version, send_join events that are
unsigned, forged, altered, for another user or server, or not allowed;
invites for users that are not the receiver's)."""

from __future__ import annotations

import copy
from urllib.parse import quote

import pytest_twisted
from signedjson.key import generate_signing_key

from atrium.crypto.event_signing import add_hashes_and_signatures
from atrium.federation.client import HttpResponseError
from tests.federation.support import CLIENT_V3, build_remote_event

FED_V1 = "/_matrix/federation/v1"
FED_V2 = "/_matrix/federation/v2"


def _q(value):
    return quote(value, safe="")


async def _error_of(call):
    try:
        answer = await call
    except HttpResponseError as e:
        return e.code, e.body
    raise AssertionError(f"expected an error, got {answer!r}")


@pytest_twisted.async_yield_fixture
async def public_room(sqlite_servers):
    a, b = sqlite_servers
    alice = await a.anon.register("alice")
    created = await alice.post(f"{CLIENT_V3}/createRoom", {"preset": "public_chat"})
    assert created.code == 200, created
    yield a, b, alice, created.json["room_id"]


@pytest_twisted.ensureDeferred
async def test_make_join_errors(public_room):
    a, b, alice, room_id = public_room
    client = b.hs.federation.client
    bob = f"@bob:{b.name}"
    # A room A is not in.
    code, body = await _error_of(
        client.get_json(a.name, f"{FED_V1}/make_join/{_q('!nope:' + a.name)}/{_q(bob)}")
    )
    assert (code, body["errcode"]) == (404, "M_NOT_FOUND")
    # The joining server does not support the room's version (no `ver`: only "1").
    version = await a.hs.stores.rooms.get_room_version_id(room_id)
    code, body = await _error_of(
        client.get_json(a.name, f"{FED_V1}/make_join/{_q(room_id)}/{_q(bob)}", args={"ver": "1"})
    )
    assert (code, body["errcode"], body["room_version"]) == (
        400,
        "M_INCOMPATIBLE_ROOM_VERSION",
        version,
    )
    # A user of another server than the one asking.
    code, body = await _error_of(
        client.get_json(
            a.name,
            f"{FED_V1}/make_join/{_q(room_id)}/{_q('@eve:elsewhere.example')}",
            args={"ver": version},
        )
    )
    assert (code, body["errcode"]) == (403, "M_FORBIDDEN")
    # The right request: a template for bob, built on A's DAG.
    answer = await client.get_json(
        a.name, f"{FED_V1}/make_join/{_q(room_id)}/{_q(bob)}", args={"ver": ["9", version]}
    )
    assert answer["room_version"] == version
    template = answer["event"]
    assert template["sender"] == bob and template["state_key"] == bob
    assert template["content"] == {"membership": "join"}
    assert set(template["prev_events"]) == set(
        await a.hs.stores.events.get_latest_event_ids_in_room(room_id)
    )
    assert "signatures" not in template and "hashes" not in template


async def _send_join(b, a, room_id, event_id, pdu):
    return await b.hs.federation.client.put_json(
        a.name, f"{FED_V2}/send_join/{_q(room_id)}/{_q(event_id)}", pdu
    )


@pytest_twisted.ensureDeferred
async def test_send_join_refuses_bad_events_and_stores_nothing(public_room):
    a, b, alice, room_id = public_room
    bob = f"@bob:{b.name}"
    good = await build_remote_event(
        a.hs, b.hs, room_id, bob, "m.room.member", {"membership": "join"}, state_key=bob
    )
    refused = []

    async def refuse(event_id, pdu, expected_code=400, errcode="M_INVALID_PARAM", path_id=None):
        code, body = await _error_of(_send_join(b, a, room_id, path_id or event_id, pdu))
        assert (code, body["errcode"]) == (expected_code, errcode), body
        refused.append(event_id)
        return body

    # Unsigned.
    unsigned = good.get_pdu_json()
    unsigned["signatures"] = {}
    assert "Signature" in (await refuse(good.event_id, unsigned))["error"]
    # Signed with a key that is not B's (same key ID): a forgery.
    forged = good.get_pdu_json()
    forged.pop("signatures")
    forger = generate_signing_key(b.hs.signing_key.version)
    add_hashes_and_signatures(good.room_version, forged, b.name, forger)
    assert "Signature" in (await refuse(good.event_id, forged))["error"]
    # Content changed after signing (the ID and signature still match: they
    # cover the redacted event, which drops displayname): wrong hash.
    altered = good.get_pdu_json()
    altered["content"] = {"membership": "join", "displayname": "Mallory"}
    body = await refuse(good.event_id, altered)
    assert "hash" in body["error"]
    # The path names another event.
    await refuse(good.event_id, good.get_pdu_json(), path_id="$other")
    # A user of another server (signed by B all the same).
    carol = f"@carol:{a.name}"
    for_a = await build_remote_event(
        a.hs, b.hs, room_id, carol, "m.room.member", {"membership": "join"}, state_key=carol
    )
    await refuse(for_a.event_id, for_a.get_pdu_json())
    # state_key is not the sender.
    other = await build_remote_event(
        a.hs, b.hs, room_id, bob, "m.room.member", {"membership": "join"}, state_key=carol
    )
    await refuse(other.event_id, other.get_pdu_json())
    # Not a join.
    message = await build_remote_event(a.hs, b.hs, room_id, bob, "m.room.message", {"body": "hi"})
    await refuse(message.event_id, message.get_pdu_json())
    # Well formed, but the room is invite-only for it: 403.
    locked = await alice.put(
        f"{CLIENT_V3}/rooms/{_q(room_id)}/state/m.room.join_rules", {"join_rule": "invite"}
    )
    assert locked.code == 200, locked
    blocked = await build_remote_event(
        a.hs, b.hs, room_id, bob, "m.room.member", {"membership": "join"}, state_key=bob
    )
    await refuse(blocked.event_id, blocked.get_pdu_json(), 403, "M_FORBIDDEN")

    assert await a.hs.stores.events.have_seen_events(refused) == set()
    assert bob not in await a.hs.stores.members.get_users_in_room(room_id)


@pytest_twisted.ensureDeferred
async def test_send_join_of_a_good_event_answers_state_and_auth_chain(public_room):
    a, b, alice, room_id = public_room
    bob = f"@bob:{b.name}"
    join = await build_remote_event(
        a.hs, b.hs, room_id, bob, "m.room.member", {"membership": "join"}, state_key=bob
    )
    answer = await _send_join(b, a, room_id, join.event_id, join.get_pdu_json())
    state = {(e["type"], e["state_key"]) for e in answer["state"]}
    assert ("m.room.create", "") in state and ("m.room.member", alice.user_id) in state
    assert ("m.room.member", bob) not in state  # the state *before* the join
    assert answer["members_omitted"] is False
    # The auth chain holds what the state and the join need: at least the create event.
    assert any(e["type"] == "m.room.create" for e in answer["auth_chain"])
    assert answer["event"]["sender"] == bob
    assert bob in await a.hs.stores.members.get_users_in_room(room_id)
    # A retry is answered the same way and stores nothing new.
    again = await _send_join(b, a, room_id, join.event_id, join.get_pdu_json())
    assert {(e["type"], e["state_key"]) for e in again["state"]} == state


async def _invite_body(a, b, room_id, target):
    invite = await build_remote_event(
        a.hs,
        a.hs,
        room_id,
        f"@alice:{a.name}",
        "m.room.member",
        {"membership": "invite"},
        state_key=target,
    )
    return invite, {
        "room_version": invite.room_version.identifier,
        "event": invite.get_pdu_json(),
        "invite_room_state": [],
    }


@pytest_twisted.ensureDeferred
async def test_invites_b_cannot_accept(public_room):
    a, b, alice, room_id = public_room
    await b.anon.register("bob")
    client = a.hs.federation.client

    async def refuse(invite, body, errcode="M_INVALID_PARAM", code=400):
        got, answer = await _error_of(
            client.put_json(b.name, f"{FED_V2}/invite/{_q(room_id)}/{_q(invite.event_id)}", body)
        )
        assert (got, answer["errcode"]) == (code, errcode), answer
        return answer

    # A user of A, not of B.
    invite, body = await _invite_body(a, b, room_id, f"@someone:{a.name}")
    await refuse(invite, body)
    # A user of B that does not exist.
    invite, body = await _invite_body(a, b, room_id, f"@ghost:{b.name}")
    await refuse(invite, body)
    # A room version B does not know.
    invite, body = await _invite_body(a, b, room_id, f"@bob:{b.name}")
    answer = await refuse(invite, {**body, "room_version": "999"}, "M_INCOMPATIBLE_ROOM_VERSION")
    assert answer["room_version"] == "999"
    # Not signed by A.
    unsigned = copy.deepcopy(body)
    unsigned["event"]["signatures"] = {}
    await refuse(invite, unsigned)
    # Nothing of the room reached B.
    assert await b.hs.stores.rooms.get_room_version_id(room_id) is None
    assert await b.hs.stores.events.have_seen_events([invite.event_id]) == set()
    # The good one is countersigned by B and held for bob.
    answer = await client.put_json(
        b.name, f"{FED_V2}/invite/{_q(room_id)}/{_q(invite.event_id)}", body
    )
    assert b.name in answer["event"]["signatures"] and a.name in answer["event"]["signatures"]
    local = await b.hs.stores.members.get_local_current_membership_for_user_in_room(
        f"@bob:{b.name}", room_id
    )
    assert local.membership == "invite" and local.event_id == invite.event_id
