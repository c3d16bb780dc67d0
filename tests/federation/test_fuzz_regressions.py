"""Regressions found by bench/fuzz_federation_api.py (schemathesis against the
server-server API, requests signed by a real origin): each was a 5xx or an
ERROR traceback in the server log."""

from __future__ import annotations

import pytest_twisted

from atrium.federation.request_auth import authorization_headers
from tests.federation.support import FED_V1, raw_federation_request
from tests.support.client import q


async def signed_request(sender, destination, method, uri, content=None):
    """A request signed by ``sender`` exactly as its federation client would."""
    header = authorization_headers(
        sender.hs.server_name, destination.name, method, uri, content, sender.hs.signing_key
    )
    return await raw_federation_request(
        sender.hs,
        destination.name,
        method,
        uri,
        content=content,
        authorization=[header[0].decode()],
    )


@pytest_twisted.ensureDeferred
async def test_get_missing_events_with_nul_in_event_ids_is_400(joined_room):
    """Fuzz seed 7 on PostgreSQL: event IDs with a NUL character in
    earliest_events/latest_events reached the events table, where PostgreSQL
    refuses NUL in a string literal (ValueError, 500). No event ID holds one:
    400 M_INVALID_PARAM, as for identifiers in the client API."""
    a, b, alice, bob, room_id = joined_room
    uri = f"{FED_V1}/get_missing_events/{q(room_id)}"
    latest = sorted(await a.hs.stores.events.get_latest_event_ids_in_room(room_id))
    for body in (
        {"earliest_events": [], "latest_events": ["$a\x00b"], "limit": 10},
        {"earliest_events": ["p\x00"], "latest_events": latest, "limit": 10},
    ):
        code, answer = await signed_request(b, a, "POST", uri, body)
        assert (code, answer["errcode"]) == (400, "M_INVALID_PARAM"), answer
    # The same request without the NUL is served.
    code, answer = await signed_request(
        b, a, "POST", uri, {"earliest_events": [], "latest_events": latest, "limit": 10}
    )
    assert code == 200 and isinstance(answer["events"], list), answer
