"""Configured rate limits apply to sends and logins over HTTP (429 M_LIMIT_EXCEEDED)."""

from __future__ import annotations

import pytest_twisted

from tests.support.client import q
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
