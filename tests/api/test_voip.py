"""GET /voip/turnServer: TURN REST API credentials, static credentials, none."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
import pytest_twisted
from twisted.internet import task

from atrium.config.homeserver import ConfigError, duration_seconds, parse_config
from atrium.handlers.voip import TurnHandler, turn_password
from atrium.util.clock import Clock
from tests.support.e2ee import V3
from tests.support.server import running_homeserver

URIS = ["turn:turn.test.local:3478?transport=udp", "turns:turn.test.local:5349?transport=tcp"]


def test_password_is_coturn_hmac_sha1():
    # Computed independently: printf '%s' "$username" | openssl dgst -sha1 -hmac s3cret -binary | base64
    assert turn_password("s3cret", "1700003600:@alice:test.local") == "jKXCHCgQlAaEv7lfN1QyIY+7wFk="


def test_username_carries_the_expiry_lifetime_ahead_of_the_clock():
    reactor = task.Clock()
    reactor.advance(1_700_000_000.7)
    turn = TurnHandler(Clock(reactor), tuple(URIS), "s3cret", None, None, 3600)
    creds = turn.credentials("@alice:test.local")
    assert creds == {
        "username": "1700003600:@alice:test.local",
        "password": "jKXCHCgQlAaEv7lfN1QyIY+7wFk=",
        "uris": URIS,
        "ttl": 3600,
    }
    reactor.advance(60)
    assert turn.credentials("@alice:test.local")["username"] == "1700003660:@alice:test.local"


def test_nothing_configured_means_an_empty_answer():
    clock = Clock(task.Clock())
    assert TurnHandler(clock, (), "s3cret", None, None, 3600).credentials("@a:b") == {}
    assert TurnHandler(clock, tuple(URIS), None, None, None, 3600).credentials("@a:b") == {}
    assert TurnHandler(clock, tuple(URIS), None, "user", None, 3600).credentials("@a:b") == {}


def test_turn_user_lifetime_needs_a_unit(tmp_path):
    assert duration_seconds("1h") == 3600
    assert duration_seconds("90s") == 90
    assert duration_seconds("2d") == 172800
    assert duration_seconds("1500ms") == 1
    path = str(tmp_path / "homeserver.yaml")
    base = {"server_name": "test.local"}
    assert parse_config(base, path).turn_user_lifetime_seconds == 3600
    assert parse_config({**base, "turn_user_lifetime": "1d"}, path).turn_user_lifetime_seconds == (
        86400
    )
    for bad in (3600, "3600", "1w"):
        with pytest.raises(ConfigError):
            parse_config({**base, "turn_user_lifetime": bad}, path)
    with pytest.raises(ConfigError):
        parse_config({**base, "turn_uris": ["stun:x"]}, path)


@pytest_twisted.ensureDeferred
async def test_turn_server_endpoint_with_shared_secret(tmp_path):
    async with running_homeserver(
        tmp_path, turn_uris=URIS, turn_shared_secret="s3cret", turn_user_lifetime="2h"
    ) as (hs, anon):
        alice = await anon.register("alice")
        assert (await alice.get(f"{V3}/voip/turnServer", token=False)).code == 401
        before = int(hs.clock.time())
        resp = await alice.get(f"{V3}/voip/turnServer")
        after = int(hs.clock.time())
        assert resp.code == 200, resp
        creds = resp.json
        assert creds["uris"] == URIS and creds["ttl"] == 7200
        expiry, user_id = creds["username"].split(":", 1)
        assert user_id == alice.user_id
        assert before + 7200 <= int(expiry) <= after + 7200
        digest = hmac.new(b"s3cret", creds["username"].encode(), hashlib.sha1).digest()
        assert base64.b64decode(creds["password"]) == digest


@pytest_twisted.ensureDeferred
async def test_turn_server_endpoint_static_and_unconfigured(tmp_path):
    async with running_homeserver(
        tmp_path, turn_uris=URIS, turn_username="turnuser", turn_password="turnpass"
    ) as (hs, anon):
        alice = await anon.register("alice")
        resp = await alice.get(f"{V3}/voip/turnServer")
        assert resp.json == {
            "username": "turnuser",
            "password": "turnpass",
            "uris": URIS,
            "ttl": 3600,
        }
    async with running_homeserver(tmp_path / "plain") as (hs, anon):
        alice = await anon.register("alice")
        resp = await alice.get(f"{V3}/voip/turnServer")
        assert (resp.code, resp.json) == (200, {})
