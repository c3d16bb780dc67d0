"""Server discovery (explicit ports, IP literals, .well-known delegation with
caching) against a local HTTPS server, the outbound address policy (no
loopback or private addresses unless allowed) and certificate checks."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web.resource import Resource

from atrium.federation.client import FederationHttpClient, RequestSendFailed, build_agent
from atrium.federation.config import FederationConfig
from atrium.federation.connect import is_ip_allowed
from atrium.federation.discovery import (
    DEFAULT_FEDERATION_PORT,
    ResolvedServer,
    ServerResolver,
    cache_period_ms,
    split_server_name,
)
from atrium.federation.tls import generate_self_signed_certificate, server_tls_options
from atrium.util.clock import Clock
from tests.federation.support import federating_server

TEST_CONFIG = FederationConfig(enabled=True, verify_certificates=False, allow_private_ips=True)


def test_server_names_split_into_host_and_port():
    assert split_server_name("example.org") == ("example.org", None)
    assert split_server_name("example.org:8449") == ("example.org", 8449)
    assert split_server_name("1.2.3.4:80") == ("1.2.3.4", 80)
    assert split_server_name("[::1]:8448") == ("::1", 8448)
    for bad in ("exa mple.org", "example.org:", "[::1", "example.org:99999"):
        with pytest.raises(ValueError):
            split_server_name(bad)


@pytest_twisted.ensureDeferred
async def test_ip_literals_and_explicit_ports_skip_well_known():
    agent, pool = build_agent(reactor, TEST_CONFIG)
    resolver = ServerResolver(agent, Clock(reactor), well_known_port=1)
    assert await resolver.resolve("1.2.3.4") == ResolvedServer(
        "1.2.3.4", DEFAULT_FEDERATION_PORT, "1.2.3.4"
    )
    assert await resolver.resolve("[::1]:9000") == ResolvedServer("::1", 9000, "[::1]:9000")
    assert await resolver.resolve("example.org:443") == ResolvedServer(
        "example.org", 443, "example.org:443"
    )
    await pool.closeCachedConnections()


def test_well_known_cache_period_follows_cache_control():
    assert cache_period_ms(None) == 24 * 3600 * 1000
    assert cache_period_ms("public, max-age=600") == 600_000
    assert cache_period_ms("max-age=99999999") == 48 * 3600 * 1000
    assert cache_period_ms("no-store") == 0


def test_only_public_addresses_are_allowed_by_default():
    for ip in (
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "192.168.0.1",
        "172.16.0.1",
        "169.254.1.1",
        "100.64.0.1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
    ):
        assert not is_ip_allowed(ip, allow_private=False), ip
    for ip in ("8.8.8.8", "2001:4860:4860::8888", "93.184.216.34"):
        assert is_ip_allowed(ip, allow_private=False), ip
    assert is_ip_allowed("127.0.0.1", allow_private=True)
    assert not is_ip_allowed("0.0.0.0", allow_private=True)
    assert not is_ip_allowed("224.0.0.1", allow_private=True)


class _WellKnown(Resource):
    isLeaf = True

    def __init__(self, answers):
        super().__init__()
        self.answers = answers  # path -> (code, headers, body)
        self.hits = []

    def render_GET(self, request):  # noqa: N802
        path = request.path.decode()
        self.hits.append(path)
        code, headers, body = self.answers.get(path, (404, {}, b"{}"))
        request.setResponseCode(code)
        for name, value in headers.items():
            request.setHeader(name, value)
        return body


def _https_server(tmp_path, resource):
    cert, key = tmp_path / "wk.crt", tmp_path / "wk.key"
    generate_self_signed_certificate("localhost", cert, key)
    from atrium.federation.services import FederationSite

    return reactor.listenSSL(
        0,
        FederationSite(resource, 1024 * 1024),
        server_tls_options(cert, key),
        interface="127.0.0.1",
    )


@pytest_twisted.ensureDeferred
async def test_well_known_delegation_is_followed_and_cached(tmp_path):
    wk = "/.well-known/matrix/server"
    resource = _WellKnown(
        {
            wk: (302, {"Location": "/elsewhere"}, b""),
            "/elsewhere": (
                200,
                {"Content-Type": "application/json", "Cache-Control": "max-age=3600"},
                json.dumps({"m.server": "delegated.example:4321"}).encode(),
            ),
        }
    )
    port = _https_server(tmp_path, resource)
    agent, pool = build_agent(reactor, TEST_CONFIG)
    try:
        resolver = ServerResolver(agent, Clock(reactor), well_known_port=port.getHost().port)
        expected = ResolvedServer("delegated.example", 4321, "delegated.example:4321")
        assert await resolver.resolve("localhost") == expected
        assert await resolver.resolve("localhost") == expected
        assert resource.hits == [wk, "/elsewhere"]  # the second answer came from the cache

        # A delegation without a port: the delegated host on 8448.
        resource.answers["/elsewhere"] = (
            200,
            {},
            json.dumps({"m.server": "other.example"}).encode(),
        )
        fresh = ServerResolver(agent, Clock(reactor), well_known_port=port.getHost().port)
        assert await fresh.resolve("localhost") == ResolvedServer(
            "other.example", DEFAULT_FEDERATION_PORT, "other.example"
        )
        # No usable .well-known: the hostname itself on 8448 (errors are cached too).
        resource.answers.clear()
        fresh = ServerResolver(agent, Clock(reactor), well_known_port=port.getHost().port)
        assert await fresh.resolve("localhost") == ResolvedServer(
            "localhost", DEFAULT_FEDERATION_PORT, "localhost"
        )
        hits = len(resource.hits)
        await fresh.resolve("localhost")
        assert len(resource.hits) == hits
    finally:
        await pool.closeCachedConnections()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_requests_follow_delegation_to_a_real_server(tmp_path):
    async with federating_server(tmp_path, "b") as b:
        resource = _WellKnown(
            {"/.well-known/matrix/server": (200, {}, json.dumps({"m.server": b.name}).encode())}
        )
        port = _https_server(tmp_path, resource)
        from atrium.crypto.keys import generate_signing_key

        client = FederationHttpClient(
            reactor,
            Clock(reactor),
            "requester.example",
            generate_signing_key("k"),
            TEST_CONFIG,
            well_known_port=port.getHost().port,
        )
        try:
            answer = await client.get_json(
                "localhost", "/_matrix/federation/v1/version", sign=False
            )
            assert answer["server"]["name"] == "Atrium"
        finally:
            await client.close()
            await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_loopback_is_refused_by_default_and_certificates_are_checked(tmp_path):
    from atrium.crypto.keys import generate_signing_key

    async with federating_server(tmp_path, "b") as b:

        def client_with(config):
            return FederationHttpClient(
                reactor, Clock(reactor), "requester.example", generate_signing_key("k"), config
            )

        path = "/_matrix/federation/v1/version"
        # Default policy: localhost resolves to loopback, which is refused.
        strict = client_with(FederationConfig(enabled=True, verify_certificates=False))
        for destination in (b.name, f"127.0.0.1:{b.fed_port}"):
            with pytest.raises(RequestSendFailed, match="not an address federation may connect to"):
                await strict.get_json(destination, path, sign=False)
        await strict.close()

        # Allowed addresses but real certificate checks: B's self-signed
        # certificate is not trusted by the system roots ...
        checking = client_with(FederationConfig(enabled=True, allow_private_ips=True))
        with pytest.raises(RequestSendFailed):
            await checking.get_json(b.name, path, sign=False)
        await checking.close()
        # ... but is with B's certificate as the CA file (it names "localhost").
        trusting = client_with(
            FederationConfig(
                enabled=True,
                allow_private_ips=True,
                ca_file=b.hs.config.data_dir / "federation.crt",
            )
        )
        assert (await trusting.get_json(b.name, path, sign=False))["server"]["name"] == "Atrium"
        await trusting.close()
