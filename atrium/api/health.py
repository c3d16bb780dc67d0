"""Health endpoints, answered by every process (route group "health").

- ``GET /health``: the process is up. A process starts listening only once
  it has joined replication and caught up with every writer, so load
  balancers and our multi-process tests poll this to know it can serve.
- ``GET /health/ready``: 503 while the replication link is down (the
  process may serve stale data and wakes no long-polls), 200 otherwise.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.http.server import Router


def register_servlets(hs: Any, router: Router) -> None:
    async def health(request: Request) -> tuple[int, Any]:
        return 200, {"status": "ok", "instance": hs.instance_name}

    async def ready(request: Request) -> tuple[int, Any]:
        replication = hs.replication
        if replication is not None and not replication.connection.is_connected():
            return 503, {"status": "replication link down", "instance": hs.instance_name}
        return 200, {"status": "ready", "instance": hs.instance_name}

    router.register("GET", "/health", health, "health")
    router.register("GET", "/health/ready", ready, "health")
