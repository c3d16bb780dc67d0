"""Configured rate limits apply to sends and logins over HTTP (429 M_LIMIT_EXCEEDED)."""

from __future__ import annotations

import pytest_twisted

from tests.support.client import JsonClient, q
from tests.support.server import running_homeserver

V3 = "/_matrix/client/v3"


@pytest_twisted.ensureDeferred
async def test_message_and_login_limits(tmp_path):
    limits = {
        "enabled": True,
        "message": {"per_second": 0.01, "burst_count": 3},
        "login": {"per_second": 0.01, "burst_count": 2},
        "registration": {"per_second": 100, "burst_count": 100},
    }
    async with running_homeserver(tmp_path, rate_limits=limits) as (hs, anon):
        alice = await anon.register("alice", "pw")
        room_id = (await alice.post(f"{V3}/createRoom", {})).json["room_id"]  # uses 1 of 3
        codes = []
        for i in range(4):
            resp = await alice.put(
                f"{V3}/rooms/{q(room_id)}/send/m.room.message/t{i}", {"body": str(i)}
            )
            codes.append(resp.code)
        assert codes[:2] == [200, 200]
        assert codes[2:] == [429, 429]
        limited = await alice.put(f"{V3}/rooms/{q(room_id)}/send/m.room.message/t9", {"body": "x"})
        assert limited.json["errcode"] == "M_LIMIT_EXCEEDED" and limited.json["retry_after_ms"] > 0

        body = {"type": "m.login.password", "user": "alice", "password": "wrong"}
        first = [(await anon.post(f"{V3}/login", body, token=False)).code for _ in range(3)]
        assert first[:2] == [403, 403] and first[2] == 429


@pytest_twisted.ensureDeferred
async def test_login_limit_per_forwarded_client_behind_a_proxy(tmp_path):
    """A listener with ``x_forwarded`` counts each client behind the proxy on its
    own (the right-most X-Forwarded-For entry, which the proxy appended); one
    without it treats the header as client data and counts the connection."""
    limits = {"enabled": True, "login": {"per_second": 0.01, "burst_count": 1}}
    listeners = [
        {"port": 0, "bind_addresses": ["127.0.0.1"], "x_forwarded": True},
        {"port": 0, "bind_addresses": ["127.0.0.1"]},
    ]
    async with running_homeserver(tmp_path, rate_limits=limits, listeners=listeners) as (hs, _):
        proxied, direct = (
            JsonClient(f"http://127.0.0.1:{port.getHost().port}") for port in hs._ports[:2]
        )
        attempts = iter(range(100))

        async def login(client, forwarded_for):
            # A new user each time: logins are limited per user as well.
            body = {"type": "m.login.password", "user": f"u{next(attempts)}", "password": "x"}
            headers = {"X-Forwarded-For": forwarded_for}
            return (await client.post(f"{V3}/login", body, token=False, headers=headers)).code

        # Two clients behind the proxy: each has its own budget of one.
        assert await login(proxied, "198.51.100.7") == 403
        assert await login(proxied, "198.51.100.8") == 403
        assert await login(proxied, "198.51.100.7") == 429
        # A forged left-hand entry does not buy a new budget.
        assert await login(proxied, "203.0.113.1, 198.51.100.8") == 429
        # Without x_forwarded the header is ignored: one budget for the connection.
        assert await login(direct, "192.0.2.1") == 403
        assert await login(direct, "192.0.2.2") == 429
