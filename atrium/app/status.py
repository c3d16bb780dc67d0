"""``atrium status -c homeserver.yaml``: every process of a deployment at a glance.

Which processes: the master, every instance in ``instance_map`` and every
worker file in ``<config dir>/workers/`` (what ``atrium generate-config``
writes), so a worker missing from one of the two is still found. Each is asked
``GET /health/ready`` (atrium/handlers/health.py) in parallel; what it answers
(its checks, every stream position it has applied and its lag behind the
writer) becomes two fixed-width tables: one line per process, then one line
per (stream, writer) with the lag of each process. A process that does not
answer is DOWN. The exit status is 0 only when every process answered ready.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import yaml

from atrium.config.homeserver import (
    MASTER_INSTANCE,
    HomeServerConfig,
    Listener,
    parse_listeners,
)

EXIT_OK = 0
EXIT_NOT_ALL_READY = 1

# Wildcard bind addresses are reached on the loopback interface.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


@attrs.frozen
class Target:
    name: str
    url: str
    app: str | None = None


@attrs.frozen
class Probe:
    target: Target
    state: str  # "ready", "NOT READY", "DOWN", "ERROR"
    body: dict[str, Any] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == "ready"


def _listener_url(listener: Listener) -> str:
    host = listener.bind_addresses[0]
    host = _LOOPBACK.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    # Listeners serve plain HTTP (listeners[].tls is accepted but not used, see
    # docs/configuration.md); TLS terminates at the reverse proxy.
    return f"http://{host}:{listener.port}"


def _http_listener(listeners: Sequence[Listener]) -> Listener | None:
    for listener in listeners:
        if listener.type == "http":
            return listener
    return None


def _worker_files(workers_dir: Path) -> list[tuple[str, str | None, str | None]]:
    """(worker_name, worker_app, url of its HTTP listener) of each worker file."""
    found = []
    for path in sorted(workers_dir.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text()) or {}
            name = data["worker_name"]
            listener = _http_listener(parse_listeners(data.get("listeners") or []))
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            continue
        found.append((name, data.get("worker_app"), _listener_url(listener) if listener else None))
    return found


def discover(config: HomeServerConfig, workers_dir: Path | None = None) -> list[Target]:
    """The master first, then every worker named by instance_map or a worker file."""
    targets: dict[str, Target] = {}
    master = config.instance_map.get(MASTER_INSTANCE)
    listener = _http_listener(config.listeners)
    if master is not None:
        targets[MASTER_INSTANCE] = Target(MASTER_INSTANCE, master.url(), "master")
    elif listener is not None:
        targets[MASTER_INSTANCE] = Target(MASTER_INSTANCE, _listener_url(listener), "master")
    apps: dict[str, str | None] = {}
    file_urls: dict[str, str | None] = {}
    for name, app, url in _worker_files(workers_dir or config.config_dir / "workers"):
        apps[name] = app
        file_urls[name] = url
    for name in sorted(set(config.instance_map) | set(file_urls)):
        if name == MASTER_INSTANCE:
            continue
        location = config.instance_map.get(name)
        url = location.url() if location is not None else file_urls.get(name)
        if url is not None:
            targets[name] = Target(name, url, apps.get(name))
    return list(targets.values())


def probe(target: Target, timeout: float) -> Probe:
    """Ask one process for /health/ready."""
    try:
        with urllib.request.urlopen(target.url + "/health/ready", timeout=timeout) as resp:
            raw, code = resp.read(), resp.status
    except urllib.error.HTTPError as e:
        raw, code = e.read(), e.code
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return Probe(target, "DOWN", error=" ".join(str(reason).split())[:80])
    try:
        body = json.loads(raw)
        assert isinstance(body, dict)
    except (ValueError, AssertionError):
        return Probe(target, "ERROR", error=f"HTTP {code}, not a health answer")
    if body.get("instance") not in (None, target.name):
        return Probe(target, "ERROR", body, f"answered as {body.get('instance')!r}")
    if code == 200:
        return Probe(target, "ready", body)
    if code == 503:
        return Probe(target, "NOT READY", body, ", ".join(body.get("failing") or []))
    return Probe(target, "ERROR", body, f"HTTP {code}")


def probe_all(targets: Sequence[Target], timeout: float) -> list[Probe]:
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(targets)))) as pool:
        return list(pool.map(lambda t: probe(t, timeout), targets))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def _check_cell(body: dict[str, Any] | None, name: str) -> str:
    if body is None:
        return "-"
    check = (body.get("checks") or {}).get(name)
    if check is None:
        return "-"
    if not check.get("ok"):
        return "FAIL"
    return f"{check['ms']}ms" if "ms" in check else "up"


def render(probes: Sequence[Probe]) -> str:
    """The two tables (processes, then stream lag per process)."""
    rows = []
    for p in probes:
        body = p.body or {}
        streams = body.get("streams") or []
        worst = max(streams, key=lambda s: s["lag"], default=None)
        lag = "-" if worst is None else str(worst["lag"])
        if worst is not None and worst["lag"] > 0:
            lag += f" ({worst['stream']}/{worst['writer']})"
        link = _check_cell(p.body, "redis")
        if link == "-":
            link = _check_cell(p.body, "replication")
        rows.append(
            [
                p.target.name,
                body.get("app") or p.target.app or "?",
                p.state,
                p.target.url,
                str(body.get("version") or "-"),
                _check_cell(p.body, "database"),
                link,
                lag,
                p.error or "",
            ]
        )
    lines = _table(
        ["PROCESS", "APP", "STATE", "URL", "VERSION", "DB", "REDIS", "MAX LAG", "PROBLEM"], rows
    )

    # (stream, writer) -> process -> its stream entry
    by_stream: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for p in probes:
        for s in (p.body or {}).get("streams") or []:
            by_stream.setdefault((s["stream"], s["writer"]), {})[p.target.name] = s
    if by_stream:
        names = [p.target.name for p in probes]
        stream_rows = []
        for (stream, writer), seen in sorted(by_stream.items()):
            position = max(s["writer_position"] for s in seen.values())
            cells = []
            for name in names:
                s = seen.get(name)
                cells.append("-" if s is None else f"{s['lag']}{'' if s['ok'] else '!'}")
            stream_rows.append([stream, writer, str(position), *cells])
        lines.append("")
        lines.append("Lag per process (writer position minus applied position; ! = over limit):")
        lines.extend(_table(["STREAM", "WRITER", "POSITION", *names], stream_rows))
    down = sum(1 for p in probes if not p.ok)
    lines.append("")
    lines.append(
        f"{len(probes) - down} of {len(probes)} processes ready"
        + (f"; {down} down or not ready" if down else "")
    )
    return "\n".join(lines)


def run_status(
    config: HomeServerConfig,
    timeout: float = 5.0,
    as_json: bool = False,
    workers_dir: Path | None = None,
) -> tuple[int, str]:
    """(exit status, text to print)."""
    probes = probe_all(discover(config, workers_dir), timeout)
    code = EXIT_OK if probes and all(p.ok for p in probes) else EXIT_NOT_ALL_READY
    if as_json:
        out = [
            {
                "name": p.target.name,
                "url": p.target.url,
                "state": p.state,
                "error": p.error,
                "health": p.body,
            }
            for p in probes
        ]
        return code, json.dumps(out, indent=2)
    return code, render(probes)
