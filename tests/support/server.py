"""In-process homeservers for API tests: real HTTP on a free port, a real
database (SQLite file or a throwaway PostgreSQL database)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml

from atrium.config.generate import generate_config
from atrium.config.homeserver import load_config
from tests.support.client import JsonClient
from tests.support.db import create_postgres_database, drop_postgres_database


@asynccontextmanager
async def running_homeserver(
    tmp_path: Path,
    db_kind: str = "sqlite",
    postgres_server: str = "",
    server_name: str = "test.local",
    **overrides: Any,
) -> AsyncIterator[tuple[Any, JsonClient]]:
    """Yields (HomeServer, anonymous JsonClient) for a server listening on 127.0.0.1."""
    from twisted.internet import reactor

    from atrium.app.homeserver import HomeServer

    db_url = create_postgres_database(postgres_server) if db_kind == "postgres" else None
    data_dir = tmp_path / f"hs-{server_name}"
    config_path, _ = generate_config(
        data_dir, server_name, database_url=db_url, http_port=0, enable_registration=True
    )
    data = yaml.safe_load(config_path.read_text())
    data.setdefault("rate_limits", {})["enabled"] = False
    for key, value in overrides.items():
        data[key] = value
    config_path.write_text(yaml.safe_dump(data))
    hs = HomeServer(load_config([str(config_path)]), reactor)
    try:
        await hs.setup()
        await hs.start()
        ports = hs.start_listening()
        port = ports[0].getHost().port
        yield hs, JsonClient(f"http://127.0.0.1:{port}")
    finally:
        await hs.stop()
        if db_url is not None:
            drop_postgres_database(postgres_server, db_url)
