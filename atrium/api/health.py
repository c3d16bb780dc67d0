"""Health endpoints, answered by every process (route group "health").

- ``GET /health`` and ``GET /health/live``: the process runs and serves HTTP.
  A process starts listening only once it has joined replication and caught
  up with every writer, so load balancers and our multi-process tests poll
  this to know it can serve. Never touches the database.
- ``GET /health/ready``: 200 when every readiness check passes (database
  reachable, replication link up, every followed stream within
  ``health.max_stream_lag``), else 503; the JSON body names each check, the
  failing ones in ``failing``, and every stream position with its lag
  (``atrium status`` reads it). See atrium/handlers/health.py.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from atrium.handlers.health import HealthChecker
from atrium.http.server import Router


def register_servlets(hs: Any, router: Router) -> None:
    checker = HealthChecker(hs)

    async def live(request: Request) -> tuple[int, Any]:
        return 200, {"status": "ok", "instance": hs.instance_name}

    async def ready(request: Request) -> tuple[int, Any]:
        is_ready, body = await checker.check()
        return (200 if is_ready else 503), body

    router.register("GET", ["/health", "/health/live"], live, "health")
    router.register("GET", "/health/ready", ready, "health")
