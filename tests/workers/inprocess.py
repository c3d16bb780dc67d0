"""Several HomeServer processes in ONE test process, on an InProcessBus.

The configs are what ``generate_config(..., workers=...)`` writes (every
listener on a free port); each HomeServer is built exactly as ``atrium
worker`` builds it, except that replication goes over a shared
``InProcessBus`` instead of Redis. Tests can then reach into any process
(its sync handler, its data handler) and cut one off the bus, which real
processes do not allow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import defer, reactor

from atrium.app.homeserver import HomeServer
from atrium.config.generate import generate_config
from atrium.config.homeserver import load_config
from atrium.replication.bus import InProcessBus
from tests.support.client import JsonClient
from tests.support.db import create_postgres_database, drop_postgres_database
from tests.support.process import free_port


@asynccontextmanager
async def in_process_deployment(
    tmp_path: Path,
    postgres_server: str,
    workers: list[tuple[str, int]],
    overrides: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[dict[str, HomeServer], InProcessBus]]:
    """name -> started HomeServer (the master is "master"), and the bus they share.

    ``overrides`` are top-level keys set in homeserver.yaml."""
    db_url = create_postgres_database(postgres_server)
    config_path, worker_files = generate_config(
        tmp_path / "hs",
        "inprocess.test",
        database_url=db_url,
        # Never contacted: the InProcessBus replaces Redis.
        redis_url="redis://127.0.0.1:1",
        http_port=free_port(),
        enable_registration=True,
        workers=workers,
    )
    data = yaml.safe_load(config_path.read_text())
    data["rate_limits"] = {"enabled": False}
    data.update(overrides or {})
    for path in worker_files:
        worker = yaml.safe_load(path.read_text())
        port = free_port()
        worker["listeners"] = [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http"}]
        data["instance_map"][worker["worker_name"]]["port"] = port
        path.write_text(yaml.safe_dump(worker))
    config_path.write_text(yaml.safe_dump(data))

    bus = InProcessBus()
    servers: dict[str, HomeServer] = {}
    master = HomeServer(load_config([str(config_path)]), reactor)
    master.replication_bus = bus  # type: ignore[attr-defined]
    servers["master"] = master
    for path in worker_files:
        config = load_config([str(config_path), str(path)])
        hs = HomeServer(config, reactor)
        hs.replication_bus = bus  # type: ignore[attr-defined]
        servers[config.worker_name] = hs
    try:
        await master.setup(allow_migrate=True)
        for name, hs in servers.items():
            if name != "master":
                await hs.setup(allow_migrate=False)
        # Together: each waits for the positions of the others' streams.
        await defer.gatherResults(
            [defer.ensureDeferred(hs.start()) for hs in servers.values()], consumeErrors=True
        )
        for hs in servers.values():
            hs.start_listening()
        yield servers, bus
    finally:
        for hs in reversed(list(servers.values())):
            await hs.stop()
        drop_postgres_database(postgres_server, db_url)


def client_for(hs: HomeServer, access_token: str | None = None) -> JsonClient:
    port = hs._ports[0].getHost().port
    return JsonClient(f"http://127.0.0.1:{port}", access_token)


async def caught_up(servers: dict[str, Any], timeout: float = 10.0) -> None:
    """Wait until every process has applied every events writer's position."""
    from tests.replication.support import wait_until

    def done() -> bool:
        for writer in servers["master"].config.writers_for("events"):
            position = servers[writer].stores.events.get_current_events_token()
            if any(
                hs.data_handler.get_position("events", writer) < position for hs in servers.values()
            ):
                return False
        return True

    await wait_until(done, timeout, "every process to apply every events writer's position")
