"""Every signed federation endpoint refuses unsigned and forged requests with
401 M_UNAUTHORIZED before doing anything: nothing they carry is stored."""

from __future__ import annotations

import pytest_twisted

from atrium.crypto.keys import generate_signing_key
from atrium.federation.request_auth import authorization_headers
from tests.federation.support import (
    FED_V1,
    build_remote_event,
    raw_federation_request,
)
from tests.support.client import q


@pytest_twisted.ensureDeferred
async def test_unsigned_and_forged_requests_get_401_and_store_nothing(joined_room):
    a, b, alice, bob, room_id = joined_room
    message = await build_remote_event(
        a.hs, b.hs, room_id, bob.user_id, "m.room.message", {"msgtype": "m.text", "body": "x"}
    )
    some_event = sorted(await a.hs.stores.events.get_latest_event_ids_in_room(room_id))[0]
    txn = {"origin": b.name, "origin_server_ts": 0, "pdus": [message.get_pdu_json()], "edus": []}
    endpoints = [
        ("PUT", f"{FED_V1}/send/forged1", txn),
        ("GET", f"{FED_V1}/event/{q(some_event)}", None),
        ("GET", f"{FED_V1}/state/{q(room_id)}?event_id={q(some_event)}", None),
        ("GET", f"{FED_V1}/state_ids/{q(room_id)}?event_id={q(some_event)}", None),
        ("GET", f"{FED_V1}/event_auth/{q(room_id)}/{q(some_event)}", None),
        ("GET", f"{FED_V1}/backfill/{q(room_id)}?v={q(some_event)}&limit=5", None),
        (
            "POST",
            f"{FED_V1}/get_missing_events/{q(room_id)}",
            {"earliest_events": [], "latest_events": [some_event], "limit": 5},
        ),
        ("GET", f"{FED_V1}/query/profile?user_id={q(alice.user_id)}", None),
        ("GET", f"{FED_V1}/query/directory?room_alias={q('#x:' + a.name)}", None),
        ("GET", f"{FED_V1}/user/devices/{q(alice.user_id)}", None),
        ("POST", f"{FED_V1}/user/keys/query", {"device_keys": {alice.user_id: []}}),
        (
            "POST",
            f"{FED_V1}/user/keys/claim",
            {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}},
        ),
    ]
    impostor = generate_signing_key(b.hs.signing_key.version)
    for method, uri, content in endpoints:
        # No Authorization header at all.
        code, body = await raw_federation_request(b.hs, a.name, method, uri, content=content)
        assert (code, body["errcode"]) == (401, "M_UNAUTHORIZED"), (method, uri, body)
        # Signed in B's name (and key ID) by a key that is not B's.
        forged = authorization_headers(b.name, a.name, method, uri, content, impostor)
        code, body = await raw_federation_request(
            b.hs, a.name, method, uri, content=content, authorization=[forged[0].decode()]
        )
        assert (code, body["errcode"]) == (401, "M_UNAUTHORIZED"), (method, uri, body)
        # Properly signed, but by B for the request it did not make.
        replayed = authorization_headers(
            b.name, a.name, "GET", f"{FED_V1}/version", None, b.hs.signing_key
        )
        code, body = await raw_federation_request(
            b.hs, a.name, method, uri, content=content, authorization=[replayed[0].decode()]
        )
        assert (code, body["errcode"]) == (401, "M_UNAUTHORIZED"), (method, uri, body)

    assert not await a.hs.stores.events.have_seen_events([message.event_id])
    assert await a.hs.federation.store.get_received_transaction(b.name, "forged1") is None

    # The same transaction, properly signed, is accepted: the 401s were the signatures.
    code, body = await raw_federation_request(
        b.hs,
        a.name,
        "PUT",
        f"{FED_V1}/send/forged1",
        content=txn,
        authorization=[
            authorization_headers(
                b.name, a.name, "PUT", f"{FED_V1}/send/forged1", txn, b.hs.signing_key
            )[0].decode()
        ],
    )
    assert code == 200 and body == {"pdus": {message.event_id: {}}}, body
    assert await a.hs.stores.events.have_seen_events([message.event_id])


@pytest_twisted.ensureDeferred
async def test_version_and_key_endpoints_need_no_signature(two_servers):
    a, b = two_servers
    code, body = await raw_federation_request(b.hs, a.name, "GET", f"{FED_V1}/version")
    assert code == 200 and body["server"]["name"] == "Atrium"
    code, body = await raw_federation_request(b.hs, a.name, "GET", "/_matrix/key/v2/server")
    assert code == 200 and body["server_name"] == a.name
    # Client-server routes are not served on the federation listener.
    code, body = await raw_federation_request(b.hs, a.name, "GET", "/_matrix/client/versions")
    assert code == 404
