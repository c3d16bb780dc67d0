"""``atrium status``: every process of a real deployment, ready or DOWN, and the exit status.

Runs the command as operators do (a subprocess on the generated config)
against a one-process embedded deployment and a master + workers deployment
(PostgreSQL + Redis), before and after one process is stopped.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import requires_postgres, requires_redis
from tests.support.process import ATRIUM, AtriumProcess, free_port, generate
from tests.workers.support import Api, Deployment

pytestmark = pytest.mark.slow


def _status(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ATRIUM, "status", "-c", str(config), "--timeout", "5", *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _process_rows(output: str) -> dict[str, list[str]]:
    """PROCESS table rows by process name (the first table, up to its blank line)."""
    lines = output.splitlines()
    assert lines[0].split()[:4] == ["PROCESS", "APP", "STATE", "URL"], output
    rows = {}
    for line in lines[1:]:
        if not line.strip():
            break
        cells = line.split()
        # "NOT READY" is the one state with a space.
        if cells[2:4] == ["NOT", "READY"]:
            cells[2:4] = ["NOT READY"]
        rows[cells[0]] = cells
    return rows


def test_status_of_an_embedded_deployment(tmp_path):
    port = free_port()
    config = generate(tmp_path / "hs", "status.test", port)
    proc = AtriumProcess([*ATRIUM, "run", "-c", str(config)], port, tmp_path / "hs.log")
    proc.start(ready_path="/health")
    try:
        result = _status(config)
        assert result.returncode == 0, result.stdout + result.stderr
        rows = _process_rows(result.stdout)
        assert list(rows) == ["master"]
        assert rows["master"][1:4] == ["master", "ready", f"http://127.0.0.1:{port}"]
        streams = [line.split() for line in result.stdout.split("STREAM", 1)[1].splitlines()]
        assert ["events", "master", "0", "0"] in streams, result.stdout
        assert "1 of 1 processes ready" in result.stdout
        as_json = json.loads(_status(config, "--json").stdout)
        assert as_json[0]["state"] == "ready" and as_json[0]["health"]["checks"]["database"]["ok"]
    finally:
        proc.stop()
    result = _status(config)
    assert result.returncode == 1, result.stdout
    assert _process_rows(result.stdout)["master"][2] == "DOWN"


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def _sample(text: str, prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {prefix}")


@requires_postgres
@requires_redis
def test_status_of_a_multi_process_deployment(tmp_path):
    d = Deployment(tmp_path, "sync:1,event_writer:1").start()
    try:
        # Some events through the writer, so its stream has moved.
        async def write() -> None:
            import aiohttp

            async with aiohttp.ClientSession() as session:
                _, token = await Api(session, d.url("master")).register("alice")
                writer = Api(session, d.url("event_writer1"), token)
                code, body = await writer.request("POST", "/_matrix/client/v3/createRoom", {})
                assert code == 200, body
                await writer.send_text(body["room_id"], "hello")

        asyncio.run(write())
        result = _status(d.config_path)
        assert result.returncode == 0, result.stdout + result.stderr
        rows = _process_rows(result.stdout)
        assert set(rows) == {"master", "sync1", "event_writer1"}
        for name, app in (
            ("master", "master"),
            ("sync1", "sync"),
            ("event_writer1", "event_writer"),
        ):
            assert rows[name][1:3] == [app, "ready"], result.stdout
            assert rows[name][3] == d.url(name)
        assert "3 of 3 processes ready" in result.stdout
        streams = [line.split() for line in result.stdout.split("STREAM", 1)[1].splitlines()]
        (events,) = [s for s in streams if s[:2] == ["events", "event_writer1"]]
        assert int(events[2]) > 0, result.stdout  # the writer's position

        # The same numbers as Prometheus sees them on the sync worker.
        metrics = _metrics(d.metrics_ports["sync1"])
        assert _sample(metrics, 'atrium_replication_connected{transport="redis"}') == 1
        label = 'stream="events",writer="event_writer1"'
        assert (
            _sample(metrics, f"atrium_stream_writer_position{{{label}}}")
            >= _sample(metrics, f"atrium_stream_position{{{label}}}")
            > 0
        )

        d.processes["sync1"].stop()
        result = _status(d.config_path)
        assert result.returncode == 1, result.stdout
        rows = _process_rows(result.stdout)
        assert rows["sync1"][2] == "DOWN" and rows["master"][2] == "ready"
        assert "1 down or not ready" in result.stdout
    finally:
        d.stop()
