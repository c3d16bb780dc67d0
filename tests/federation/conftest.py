"""Fixtures for federation tests: pairs of real Atrium servers on loopback TLS."""

from __future__ import annotations

import pytest_twisted

from tests.conftest import POSTGRES_URL
from tests.federation.support import federating_server


@pytest_twisted.async_yield_fixture
async def two_servers(db_kind, tmp_path):
    """(A, B): A on each database engine, B on SQLite; both federating over TLS."""
    async with federating_server(tmp_path, "a", db_kind, POSTGRES_URL) as a:
        async with federating_server(tmp_path, "b") as b:
            yield a, b


@pytest_twisted.async_yield_fixture
async def joined_room(two_servers):
    """(A, B, alice@A client, bob@B client, room_id): bob joined alice's public room."""
    from tests.federation.support import create_joined_room

    a, b = two_servers
    alice, bob, room_id = await create_joined_room(a, b)
    yield a, b, alice, bob, room_id


@pytest_twisted.async_yield_fixture
async def sqlite_servers(tmp_path):
    """(A, B): two federating servers on SQLite (tests that need one engine only)."""
    async with federating_server(tmp_path, "a") as a:
        async with federating_server(tmp_path, "b") as b:
            yield a, b
