"""Suite-wide set-up: decide whether PostgreSQL and Redis are usable.

Tests needing a service skip when it is unreachable, except under CI=true,
where a missing service fails the whole run before any test starts.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest
import pytest_twisted

POSTGRES_URL = os.environ.get(
    "ATRIUM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("ATRIUM_TEST_REDIS", "redis://127.0.0.1:6379")


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=2
        ):
            return True
    except OSError:
        return False


POSTGRES_AVAILABLE = _reachable(POSTGRES_URL, 5432)
REDIS_AVAILABLE = _reachable(REDIS_URL, 6379)


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("CI") == "true":
        missing = [
            name
            for name, ok in (("PostgreSQL", POSTGRES_AVAILABLE), ("Redis", REDIS_AVAILABLE))
            if not ok
        ]
        if missing:
            pytest.exit(
                f"CI=true but {' and '.join(missing)} unreachable ({POSTGRES_URL}, {REDIS_URL})",
                returncode=3,
            )


requires_postgres = pytest.mark.skipif(
    not POSTGRES_AVAILABLE, reason=f"PostgreSQL unreachable at {POSTGRES_URL}"
)
requires_redis = pytest.mark.skipif(not REDIS_AVAILABLE, reason=f"Redis unreachable at {REDIS_URL}")


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=[requires_postgres, pytest.mark.postgres])]
)
def db_kind(request: pytest.FixtureRequest) -> str:
    """Runs a storage test once per engine."""
    return request.param


@pytest_twisted.async_yield_fixture
async def db(db_kind: str, tmp_path):
    """A freshly migrated database of each kind (SQLite file, throwaway PostgreSQL DB)."""
    from tests.support.db import make_database

    async with make_database(db_kind, tmp_path, POSTGRES_URL) as pool:
        yield pool


@pytest_twisted.async_yield_fixture
async def server(db_kind: str, tmp_path):
    """(HomeServer, JsonClient) for a fresh server on each engine, registration open."""
    from tests.support.server import running_homeserver

    async with running_homeserver(tmp_path, db_kind, POSTGRES_URL) as pair:
        yield pair
