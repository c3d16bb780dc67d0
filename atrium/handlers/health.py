"""Readiness of one process: what ``GET /health/ready`` and ``atrium status`` report.

A process is ready when
- ``database``: a trivial query (``SELECT 1``) answers within
  ``DATABASE_TIMEOUT`` seconds (a hung pool counts as down, not as slow);
- ``redis`` (or ``replication`` for a bus other than Redis): its replication
  link is up, when it has one (the embedded default has none);
- ``streams``: for every (stream, writer) it follows, the writer's advertised
  position minus the position this process has applied is at most
  ``health.max_stream_lag`` (stream positions, see docs/configuration.md).

Lag is counted in stream positions, not seconds: every process knows both
numbers without a clock or a timestamp on the rows (most stream rows carry
none), the same subtraction is what Prometheus gets from
``atrium_stream_writer_position - atrium_stream_position``, and a process
that is merely idle never looks behind. A link that is down is caught by the
``redis`` check, not by lag (nothing is advertised over a dead link).
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet import defer

from atrium import __version__

logger = logging.getLogger(__name__)

# Seconds the database check may take before the process counts as not ready.
DATABASE_TIMEOUT = 2.0


def _select_one(txn: Any) -> None:
    txn.execute("SELECT 1")
    txn.fetchall()


class HealthChecker:
    """Runs the readiness checks of one HomeServer (see the module docstring)."""

    def __init__(self, hs: Any, database_timeout: float = DATABASE_TIMEOUT) -> None:
        self.hs = hs
        self.database_timeout = database_timeout

    async def _check_database(self) -> dict[str, Any]:
        hs = self.hs
        start = hs.clock.time()
        d = hs.db.run_interaction("health_check", _select_one)
        d.addTimeout(self.database_timeout, hs.reactor)
        try:
            await d
        except defer.TimeoutError:
            return {"ok": False, "error": f"no answer within {self.database_timeout:g}s"}
        except Exception as e:
            # The driver's message (hosts, ports, users) goes to the log only:
            # /health/ready answers anyone who can reach the listener.
            logger.warning("health check: database unreachable: %s", " ".join(str(e).split()))
            return {"ok": False, "error": f"{type(e).__name__} (details in the log)"}
        return {"ok": True, "ms": round((hs.clock.time() - start) * 1000, 1)}

    def _check_replication(self) -> tuple[str, dict[str, Any]] | None:
        replication = self.hs.replication
        if replication is None:
            return None
        from atrium.replication.redis import RedisBus

        name = "redis" if isinstance(replication.connection, RedisBus) else "replication"
        if replication.connection.is_connected():
            return name, {"ok": True}
        return name, {"ok": False, "error": "replication link down (reconnecting)"}

    def stream_positions(self) -> list[dict[str, Any]]:
        """Every (stream, writer) this process knows, with its applied position and lag."""
        max_lag = self.hs.config.max_stream_lag
        rows = []
        for stream, writer, position, advertised in self.hs.data_handler.lags():
            lag = advertised - position
            rows.append(
                {
                    "stream": stream,
                    "writer": writer,
                    "position": position,
                    "writer_position": advertised,
                    "lag": lag,
                    "ok": lag <= max_lag,
                }
            )
        return rows

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """(ready, body): the body names every check and, in ``failing``, those that failed."""
        hs = self.hs
        checks: dict[str, dict[str, Any]] = {"database": await self._check_database()}
        replication = self._check_replication()
        if replication is not None:
            checks[replication[0]] = replication[1]
        streams = self.stream_positions()
        lagging = [f"{s['stream']}/{s['writer']}" for s in streams if not s["ok"]]
        checks["streams"] = {"ok": not lagging, "max_lag": hs.config.max_stream_lag}
        if lagging:
            checks["streams"]["error"] = "lagging: " + ", ".join(lagging)
        failing = [name for name, result in checks.items() if not result["ok"]]
        body = {
            "status": "ready" if not failing else "not ready",
            "instance": hs.instance_name,
            "app": hs.config.worker_app or "master",
            "version": __version__,
            "failing": failing,
            "checks": checks,
            "streams": streams,
        }
        return not failing, body
