"""Real multi-process deployments for tests: master + workers on PostgreSQL + Redis.

``Deployment`` runs ``atrium generate-config --workers ...`` (what operators
run), gives every listener a free port, points the deployment at its own
database and its own Redis channel (or its own ``redis-server`` when the
test stops Redis), and starts ``atrium run`` and one ``atrium worker`` per
worker file as separate processes. Readiness is polled on ``/health``;
nothing sleeps for a fixed time.

``Api`` is a small asyncio JSON client (aiohttp, which matrix-nio uses too)
for the requests nio has no method for, and ``collect_timeline`` long-polls
/sync through one process until every expected event has arrived.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import yaml

from tests.conftest import POSTGRES_URL, REDIS_URL
from tests.support.db import create_postgres_database, drop_postgres_database
from tests.support.process import ATRIUM, AtriumProcess, free_port

SERVER_NAME = "workers.test"
V3 = "/_matrix/client/v3"


def q(value: str) -> str:
    return quote(value, safe="")


class RedisServer:
    """A redis-server of the test's own, on a free port (tests that stop Redis)."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        binary = shutil.which("redis-server") or "redis-server"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        import socket

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class Deployment:
    """One master and its workers, each a real process."""

    def __init__(
        self,
        tmp_path: Path,
        workers: str,
        *,
        redis_url: str | None = None,
        overrides: dict[str, Any] | None = None,
        worker_names: dict[str, str] | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.workers_spec = workers
        self.redis_url = redis_url or REDIS_URL
        self.overrides = overrides or {}
        # worker file name -> `atrium worker --worker-name` template (scaled replicas)
        self.worker_names = worker_names or {}
        self.db_url: str | None = None
        self.config_path = tmp_path / "hs" / "homeserver.yaml"
        self.processes: dict[str, AtriumProcess] = {}
        self.worker_files: dict[str, Path] = {}
        self.apps: dict[str, str] = {}
        self.metrics_ports: dict[str, int] = {}

    # -- set-up ------------------------------------------------------------------------
    def generate(self) -> None:
        self.db_url = create_postgres_database(POSTGRES_URL)
        master_port = free_port()
        subprocess.run(
            [
                *ATRIUM,
                "generate-config",
                "--server-name",
                SERVER_NAME,
                "--data-dir",
                str(self.config_path.parent),
                "--http-port",
                str(master_port),
                "--enable-registration",
                "--database-url",
                self.db_url,
                "--redis-url",
                self.redis_url,
                "--workers",
                self.workers_spec,
            ],
            check=True,
            capture_output=True,
        )
        data = yaml.safe_load(self.config_path.read_text())
        data["rate_limits"] = {"enabled": False}
        # Our own channel: tests sharing the machine's Redis never hear each other.
        data["redis"]["channel"] = f"atrium-test-{uuid.uuid4().hex}"
        data["replication"] = {"ping_interval": 0.5, "ping_timeout": 3}
        data.update(self.overrides)
        # The master's metrics too: tests check which process served what.
        self.metrics_ports["master"] = free_port()
        data["listeners"].append(
            {
                "port": self.metrics_ports["master"],
                "bind_addresses": ["127.0.0.1"],
                "type": "metrics",
            }
        )
        self.processes["master"] = AtriumProcess(
            [*ATRIUM, "run", "-c", str(self.config_path)],
            master_port,
            self.tmp_path / "master.log",
        )
        self.apps["master"] = "master"
        # Fresh free ports for every worker listener (generate-config numbers
        # them from a base port that may be taken on a busy machine).
        for path in sorted((self.config_path.parent / "workers").glob("*.yaml")):
            worker = yaml.safe_load(path.read_text())
            name = worker["worker_name"]
            port = free_port()
            for listener in worker["listeners"]:
                if listener.get("type", "http") == "http":
                    listener["port"] = port
                else:
                    listener["port"] = self.metrics_ports[name] = free_port()
            path.write_text(yaml.safe_dump(worker, sort_keys=False))
            data["instance_map"][name]["port"] = port
            self.worker_files[name] = path
            self.apps[name] = worker["worker_app"]
            self.processes[name] = AtriumProcess(
                [
                    *ATRIUM,
                    "worker",
                    "-c",
                    str(self.config_path),
                    "-c",
                    str(path),
                    *(
                        ["--worker-name", self.worker_names[name]]
                        if name in self.worker_names
                        else []
                    ),
                ],
                port,
                self.tmp_path / f"{name}.log",
            )
        self.config_path.write_text(yaml.safe_dump(data, sort_keys=False))

    def start(self) -> Deployment:
        self.generate()
        # The master first: it migrates the schema workers refuse to migrate.
        self.processes["master"].start(ready_path="/health")
        workers = [p for name, p in self.processes.items() if name != "master"]
        for proc in workers:
            proc.launch()
        for proc in workers:
            proc.wait_ready(timeout=90, ready_path="/health")
        return self

    def stop(self) -> None:
        for proc in reversed(list(self.processes.values())):
            proc.stop()
        if self.db_url is not None:
            drop_postgres_database(POSTGRES_URL, self.db_url)
            self.db_url = None

    # -- looking things up -------------------------------------------------------------
    def url(self, name: str) -> str:
        return self.processes[name].url

    def of_app(self, app: str) -> list[str]:
        return sorted(name for name, a in self.apps.items() if a == app)

    def restart(self, name: str) -> None:
        proc = self.processes[name]
        proc.stop()
        proc.launch()
        proc.wait_ready(timeout=90, ready_path="/health")

    def log(self, name: str) -> str:
        return self.processes[name].log_path.read_text(errors="replace")

    async def metric(self, session: aiohttp.ClientSession, name: str, metric: str) -> float:
        """The value of an unlabelled metric on a worker's metrics listener."""
        url = f"http://127.0.0.1:{self.metrics_ports[name]}/metrics"
        async with session.get(url) as resp:
            text = await resp.text()
        for line in text.splitlines():
            if line.startswith(metric + " "):
                return float(line.split()[1])
        raise AssertionError(f"{metric} not exported by {name}")

    async def metric_total(
        self, session: aiohttp.ClientSession, name: str, metric: str, **labels: str
    ) -> float:
        """The sum of ``metric`` over the series of process ``name`` matching ``labels``."""
        url = f"http://127.0.0.1:{self.metrics_ports[name]}/metrics"
        async with session.get(url) as resp:
            text = await resp.text()
        total = 0.0
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            if not (series == metric or series.startswith(metric + "{")):
                continue
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total


class Api:
    """Minimal asyncio JSON client for one process of a deployment."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str | None = None):
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.token = token

    def at(self, base_url: str) -> Api:
        """The same credentials against another process."""
        return Api(self.session, base_url, self.token)

    async def request(
        self, method: str, path: str, body: Any = None, *, timeout: float = 60.0
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body)
        async with self.session.request(
            method,
            self.base_url + path,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            raw = await resp.read()
            try:
                return resp.status, json.loads(raw) if raw else None
            except ValueError:
                return resp.status, raw

    async def register(self, name: str) -> tuple[str, str]:
        """Register ``name`` (on this process, the master); (user_id, access_token)."""
        code, body = await self.request(
            "POST",
            f"{V3}/register",
            {"username": name, "password": f"pw-{name}-secret", "auth": {"type": "m.login.dummy"}},
        )
        assert code == 200, body
        return body["user_id"], body["access_token"]

    async def send_text(self, room_id: str, body: str) -> str:
        txn = uuid.uuid4().hex
        code, answer = await self.request(
            "PUT",
            f"{V3}/rooms/{q(room_id)}/send/m.room.message/{txn}",
            {"msgtype": "m.text", "body": body},
        )
        assert code == 200, answer
        return answer["event_id"]


# Timelines are never cut short (limited) in these tests: every event must show.
FULL_TIMELINE_FILTER = json.dumps({"room": {"timeline": {"limit": 1000}}})


async def sync_once(
    api: Api, since: str | None, timeout_ms: int = 0, sync_filter: str = FULL_TIMELINE_FILTER
) -> dict[str, Any]:
    path = f"{V3}/sync?timeout={timeout_ms}&filter={q(sync_filter)}"
    if since:
        path += f"&since={q(since)}"
    code, body = await api.request("GET", path, timeout=timeout_ms / 1000 + 30)
    assert code == 200, body
    return body


def timeline_ids(body: dict[str, Any], room_ids: set[str]) -> list[tuple[str, str]]:
    """(room_id, event_id) of the m.room.message timeline events, in response order."""
    out = []
    for room_id, room in body.get("rooms", {}).get("join", {}).items():
        if room_id not in room_ids:
            continue
        assert not room["timeline"]["limited"], f"{room_id}: a limited timeline"
        for event in room["timeline"]["events"]:
            if event["type"] == "m.room.message":
                out.append((room_id, event["event_id"]))
    return out


async def collect_timeline(
    api: Api,
    since: str,
    room_ids: set[str],
    expected: int,
    deadline_s: float = 60.0,
    tolerate_errors: bool = False,
) -> tuple[list[tuple[str, str]], str]:
    """Long-poll /sync from ``since`` until ``expected`` messages arrived (or time is up).

    Returns every message seen (duplicates included: callers check there
    are none) and the last next_batch. With ``tolerate_errors`` a failing
    request (the worker being restarted) is retried with the same token.
    """
    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + deadline_s
    while len(seen) < expected and time.monotonic() < deadline:
        try:
            body = await sync_once(api, since, timeout_ms=2000)
        except (aiohttp.ClientError, TimeoutError, AssertionError):
            if not tolerate_errors:
                raise
            await asyncio.sleep(0.1)
            continue
        seen.extend(timeline_ids(body, room_ids))
        since = body["next_batch"]
    return seen, since
