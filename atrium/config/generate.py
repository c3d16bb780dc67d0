"""``atrium generate-config``: a data directory with homeserver.yaml, a signing
key and, for split deployments, one config file per worker.

The generated files are the starting point operators edit; our own
multi-process tests and docker-compose use exactly these files.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import yaml

from atrium.config.homeserver import ConfigError

WORKER_APPS = ("sync", "event_writer", "federation_reader", "generic", "federation_sender")

# --containers: one container per process (docker-compose.yml). Every process
# listens on all interfaces on the same ports, reaches the others by instance
# name (the compose service name), keeps its data in a volume and reads its
# secrets from the environment, so the generated files hold no secret and can
# be committed.
CONTAINER_DATA_DIR = "/data"
CONTAINER_METRICS_PORT = 9000
# Worker types other processes call (so they need fixed names and an
# instance_map entry); in containers the others are scaled replicas whose
# names come from their hostnames (`atrium worker --worker-name`).
NAMED_APPS = ("event_writer", "federation_sender")
CONTAINER_SECRETS = {
    "registration_shared_secret": "${ATRIUM_REGISTRATION_SHARED_SECRET}",
    "worker_replication_secret": "${ATRIUM_WORKER_REPLICATION_SECRET}",
}


def parse_workers_spec(spec: str) -> list[tuple[str, int]]:
    """``sync:2,event_writer:2`` -> [("sync", 2), ("event_writer", 2)]."""
    result = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        app, _, count = part.partition(":")
        if app not in WORKER_APPS:
            raise ConfigError(
                "--workers", f"unknown worker type {app!r} (one of {', '.join(WORKER_APPS)})"
            )
        try:
            n = int(count) if count else 1
        except ValueError:
            raise ConfigError("--workers", f"count for {app!r} must be an integer") from None
        if n < 1:
            raise ConfigError("--workers", f"count for {app!r} must be at least 1")
        result.append((app, n))
    return result


def generate_config(
    data_dir: Path,
    server_name: str,
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    http_port: int = 8008,
    bind_address: str = "127.0.0.1",
    enable_registration: bool = False,
    workers: list[tuple[str, int]] | None = None,
    worker_base_port: int | None = None,
    federation: dict[str, Any] | None = None,
    overwrite: bool = False,
    containers: bool = False,
    public_baseurl: str | None = None,
) -> tuple[Path, list[Path]]:
    """Write ``data_dir/homeserver.yaml`` (and worker files); returns their paths.

    With ``containers`` (see CONTAINER_*), no signing key is written: the
    master makes it in the data volume on first start (``atrium generate-key``).
    """
    from atrium.crypto.keys import generate_signing_key, write_signing_key_file

    data_dir.mkdir(parents=True, exist_ok=True)
    config_path = data_dir / "homeserver.yaml"
    if config_path.exists() and not overwrite:
        raise ConfigError(
            "--data-dir", f"{config_path} already exists; remove it or choose another directory"
        )
    key_path = data_dir / "signing.key"
    if not key_path.exists() and not containers:
        write_signing_key_file(key_path, [generate_signing_key()])
    if containers:
        bind_address = "0.0.0.0"

    workers = workers or []
    if workers and (not database_url or not database_url.startswith("postgres")):
        raise ConfigError("--database-url", "workers need a postgresql:// database URL")
    if workers and not redis_url:
        raise ConfigError("--redis-url", "workers need a redis:// URL")

    config: dict[str, Any] = {
        "server_name": server_name,
        "public_baseurl": public_baseurl or f"http://{bind_address}:{http_port}/",
        "data_dir": CONTAINER_DATA_DIR if containers else ".",
        "signing_key_path": f"{CONTAINER_DATA_DIR}/signing.key" if containers else "signing.key",
        "database": {"url": database_url or "sqlite:///homeserver.db"},
        "listeners": [
            {
                "port": http_port,
                "bind_addresses": [bind_address],
                "type": "http",
                "resources": ["client", "federation", "keys", "health", "admin", "replication"],
            }
        ],
        "enable_registration": enable_registration,
        "registration_shared_secret": secrets.token_urlsafe(32),
    }
    if containers:
        config["registration_shared_secret"] = CONTAINER_SECRETS["registration_shared_secret"]
        # Clients reach every process through nginx: rate limits go by the
        # address nginx puts in X-Forwarded-For.
        config["listeners"][0]["x_forwarded"] = True
        config["listeners"].append(_metrics_listener(CONTAINER_METRICS_PORT, bind_address))
    if redis_url:
        config["redis"] = {"url": redis_url}
    if federation:
        # -- wt/fed: the federation listener serves TLS; without a certificate
        # given, make a self-signed one for the server name's host.
        federation = dict(federation)
        if not federation.get("tls_certificate_path"):
            from atrium.federation.tls import (
                generate_self_signed_certificate,
                host_of_server_name,
            )

            cert, key = data_dir / "federation.crt", data_dir / "federation.key"
            generate_self_signed_certificate(host_of_server_name(server_name), cert, key)
            federation["tls_certificate_path"] = cert.name
            federation["tls_private_key_path"] = key.name
        config["federation"] = federation

    worker_files: list[Path] = []
    if workers:
        config["worker_replication_secret"] = (
            CONTAINER_SECRETS["worker_replication_secret"]
            if containers
            else secrets.token_urlsafe(32)
        )
        port = worker_base_port or http_port + 100

        def host(name: str) -> str:
            return name if containers else bind_address

        instance_map: dict[str, Any] = {"master": {"host": host("master"), "port": http_port}}
        event_writers: list[str] = []
        worker_dir = data_dir / "workers"
        worker_dir.mkdir(exist_ok=True)
        for app, count in workers:
            for i in range(1, count + 1):
                name = f"{app}{i}"
                worker_port, metrics_port = port, port + 1
                port += 2
                if containers:
                    worker_port, metrics_port = http_port, CONTAINER_METRICS_PORT
                if not containers or app in NAMED_APPS:
                    instance_map[name] = {"host": host(name), "port": worker_port}
                if app == "event_writer":
                    event_writers.append(name)
                worker = {
                    "worker_name": name,
                    "worker_app": app,
                    "listeners": [
                        {
                            "port": worker_port,
                            "bind_addresses": [bind_address],
                            "type": "http",
                            "resources": ["client", "federation", "keys", "health", "replication"],
                            **({"x_forwarded": True} if containers else {}),
                        },
                        _metrics_listener(metrics_port, bind_address),
                    ],
                }
                path = worker_dir / f"{name}.yaml"
                path.write_text(yaml.safe_dump(worker, sort_keys=False))
                worker_files.append(path)
        config["instance_map"] = instance_map
        if event_writers:
            config["stream_writers"] = {"events": event_writers}
    config_path.write_text(
        "# Atrium homeserver configuration; docs/configuration.md lists every key.\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    return config_path, worker_files


def _metrics_listener(port: int, bind_address: str) -> dict[str, Any]:
    return {"port": port, "bind_addresses": [bind_address], "type": "metrics"}
