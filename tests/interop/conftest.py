"""Fixtures for interoperability tests against a real Synapse.

``synapse`` is one Synapse process per test session (per xdist worker),
installed on first use (see tests/support/synapse.py). When Synapse cannot
be had the tests skip, except under CI=true, where they fail: CI must
really run them.
"""

from __future__ import annotations

import os

import pytest
import pytest_twisted

from tests.federation.support import federating_server
from tests.support.synapse import SynapseServer, SynapseUnavailable, synapse_python


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory):
    """A running Synapse (``SynapseServer``), shared by the session's interop tests."""
    try:
        python = synapse_python()
    except SynapseUnavailable as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and Synapse is unavailable: {e}", pytrace=False)
        pytest.skip(f"Synapse unavailable: {e}")
    server = SynapseServer(python, tmp_path_factory.mktemp("synapse"))
    try:
        server.start()
    except SynapseUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest_twisted.async_yield_fixture
async def atrium(synapse, tmp_path):
    """An Atrium federating over loopback TLS, configured as generate-config's
    --federation-skip-verify --federation-allow-private-ips make it (SQLite)."""
    async with federating_server(tmp_path, "atrium") as server:
        yield server
