"""docker-compose.yml and deploy/, checked structurally (Docker is not run here).

Pins down: the committed container configs are exactly what ``deploy/generate``
writes; every Atrium service starts with config files that exist and load
(worker name override and environment variables applied as in a container);
every events writer in ``stream_writers`` has its own service reachable at its
``instance_map`` address; every nginx upstream host is a service (or alias)
listening on that port; every long-running service has a health check, the
Atrium ones on ``/health/ready``; the master migrates before it serves; the
database and the data directory live in volumes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from atrium.app.routes import collect_routes
from atrium.config.homeserver import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ENV = {
    "POSTGRES_PASSWORD": "pg-secret",
    "ATRIUM_WORKER_REPLICATION_SECRET": "replication-secret-of-some-length",
    "ATRIUM_REGISTRATION_SHARED_SECRET": "registration-secret",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture
def container_env(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ATRIUM_SERVER_NAME", raising=False)


def atrium_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if s.get("image") == "atrium:latest"}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    if service.get("entrypoint") == ["/bin/sh", "-c"]:
        return command[0].split()
    assert service.get("entrypoint") is None, service
    return ["atrium", *command]


def config_files(service: dict[str, Any]) -> list[Path]:
    """The -c files of the service's `atrium run|worker`, as paths in this checkout."""
    words = command_of(service)
    start = max(i for i, w in enumerate(words) if w in ("run", "worker"))
    files = [words[i + 1] for i in range(start, len(words) - 1) if words[i] == "-c"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"]}
    assert mounts["/config"] == "./deploy"
    return [DEPLOY / f.removeprefix("/config/") for f in files]


def test_committed_container_configs_are_the_generators_output(tmp_path):
    out = tmp_path / "deploy"
    env = dict(os.environ, ATRIUM=f"{sys.executable} -m atrium.cli")
    subprocess.run([str(DEPLOY / "generate"), str(out)], check=True, env=env, cwd=ROOT)
    generated = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for rel in generated:
        assert (DEPLOY / rel).read_text() == (out / rel).read_text(), f"stale deploy/{rel}"
    committed_workers = {p.name for p in (DEPLOY / "workers").glob("*.yaml")}
    assert committed_workers == {p.name for p in (out / "workers").glob("*.yaml")}
    assert not (out / "signing.key").exists(), "container configs must not carry a key"
    text = (DEPLOY / "homeserver.yaml").read_text()
    assert "${ATRIUM_WORKER_REPLICATION_SECRET}" in text
    assert "${ATRIUM_REGISTRATION_SHARED_SECRET}" in text


def test_every_atrium_service_starts_with_configs_that_load(compose, container_env):
    services = atrium_services(compose)
    assert {"master", "sync", "generic", "federation_reader"} <= set(services)
    names = {}
    for name, service in services.items():
        files = config_files(service)
        assert files and all(f.is_file() for f in files), (name, files)
        words = command_of(service)
        override = words[words.index("--worker-name") + 1] if "--worker-name" in words else None
        config = load_config([str(f) for f in files], override)
        if name == "master":
            assert not config.is_worker
            assert "{hostname}" not in " ".join(words)
        else:
            assert config.is_worker, name
        names[name] = config.worker_name
        # Secrets come from the environment the compose file passes on.
        for variable in ENV:
            assert variable in service["environment"], (name, variable)
        assert config.worker_replication_secret == ENV["ATRIUM_WORKER_REPLICATION_SECRET"]
        assert ":pg-secret@postgres/" in config.database_url
        assert config.server_name == "localhost"
    # Scaled services name each replica after its host; fixed ones keep their file's name.
    for scaled in ("sync", "generic", "federation_reader"):
        assert names[scaled].startswith(f"{scaled}-"), names
        assert "{hostname}" in " ".join(command_of(services[scaled]))


def test_configs_without_their_environment_name_the_key(compose, monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="database.url: environment variable POSTGRES_PASSWORD"):
        load_config([str(DEPLOY / "homeserver.yaml")])


def test_every_events_writer_has_its_own_service(compose, container_env):
    config = load_config([str(DEPLOY / "homeserver.yaml")])
    services = atrium_services(compose)
    writers = config.writers_for("events")
    assert len(writers) == 2
    for writer in writers:
        location = config.instance_map[writer]
        service = services[location.host]  # the instance_map host is the service name
        files = config_files(service)
        worker = load_config([str(f) for f in files])
        assert worker.worker_name == writer and worker.worker_app == "event_writer"
        assert location.port in {lst.port for lst in worker.listeners if lst.type == "http"}
        assert "--worker-name" not in command_of(service)  # fixed names: stream_writers
    master = config.instance_map["master"]
    assert master.host == "master" and master.host in services


def _hosts_and_aliases(compose: dict[str, Any]) -> dict[str, list[str]]:
    """DNS name -> services answering to it on the compose network."""
    names: dict[str, list[str]] = {}
    for name, service in compose["services"].items():
        names.setdefault(name, []).append(name)
        for network in (service.get("networks") or {}).values():
            for alias in (network or {}).get("aliases", []):
                names.setdefault(alias, []).append(name)
    return names


def test_nginx_upstreams_are_services_listening_there(compose, container_env):
    nginx = compose["services"]["nginx"]
    assert "./deploy/nginx/atrium.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    conf = (DEPLOY / "nginx" / "atrium.conf").read_text()
    servers = re.findall(r"^\s+server ([\w.-]+):(\d+);", conf, re.M)
    assert servers
    dns = _hosts_and_aliases(compose)
    services = atrium_services(compose)
    for host, port in servers:
        assert host in dns, host
        for name in dns[host]:
            files = config_files(services[name])
            config = load_config([str(f) for f in files])
            assert int(port) in {lst.port for lst in config.listeners if lst.type == "http"}
            assert nginx["depends_on"][name]["condition"] == "service_healthy", name
    # The event writers share the alias nginx hashes rooms over.
    assert sorted(dns["event_writer"]) == ["event_writer1", "event_writer2"]


def test_health_checks_volumes_and_start_order(compose):
    services = compose["services"]
    health_paths = {route.template for route in collect_routes() if route.group == "health"}
    for name, service in services.items():
        if "monitoring" in service.get("profiles", []):
            continue
        check = service.get("healthcheck")
        assert check and check.get("test"), name
        if name in atrium_services(compose) or name == "nginx":
            url = check["test"][-1]
            assert url.endswith("/health/ready") and "/health/ready" in health_paths, name
    master = command_of(services["master"])
    text = " ".join(master)
    assert text.index("atrium migrate") < text.index("atrium run"), text
    assert text.index("atrium generate-key") < text.index("atrium run"), text
    for name in ("postgres", "redis"):
        assert services["master"]["depends_on"][name]["condition"] == "service_healthy"
    volumes = compose["volumes"]
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    for name in atrium_services(compose):
        assert "atrium-data:/data" in services[name]["volumes"], name
        if name != "master":
            assert services[name]["depends_on"]["master"]["condition"] == "service_healthy"
    assert {"postgres-data", "atrium-data"} <= set(volumes)


def test_the_committed_nginx_file_passes_nginx_t(tmp_path):
    """The compose routing file is valid nginx (its service names made local to resolve)."""
    from tests.support.nginx import NginxProxy

    proxy = NginxProxy(tmp_path)
    text = (DEPLOY / "nginx" / "atrium.conf").read_text()
    local, count = re.subn(r"(?m)^(\s+server )[\w.-]+:(\d+);", r"\g<1>127.0.0.1:\2;", text)
    assert count >= 5
    proxy.routing_conf.write_text(local.replace("listen 8008;", f"listen {proxy.listen};"))
    proxy.check()
