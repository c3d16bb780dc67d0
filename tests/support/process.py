"""Real `atrium` processes for end-to-end tests: free ports, readiness polling.

Nothing here sleeps for a fixed time: start-up waits until the HTTP endpoint
answers (or the process dies, which fails the test with its output).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

ATRIUM = [sys.executable, "-m", "atrium.cli"]


# Ports handed out below the kernel's ephemeral range (32768-60999 on Linux):
# a port the kernel picks for bind(0) comes from that range, which is also
# where every outgoing connection's source port comes from, so between
# picking it and the process binding it, any client connection on the machine
# (thousands, to PostgreSQL and Redis, with tests running in parallel) may take it.
_PORT_RANGE = (20000, 32768)
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nobody listens on now, outside the ephemeral range, never returned twice."""
    for _ in range(200):
        port = random.randrange(*_PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AtriumProcess:
    """One running `atrium run` / `atrium worker` process."""

    def __init__(self, args: list[str], port: int, log_path: Path) -> None:
        self.args = args
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(
        self, timeout: float = 60.0, ready_path: str = "/_matrix/client/versions"
    ) -> AtriumProcess:
        self.launch()
        return self.wait_ready(timeout, ready_path)

    def launch(self) -> AtriumProcess:
        """Start the process without waiting (see ``wait_ready``)."""
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    def wait_ready(
        self, timeout: float = 60.0, ready_path: str = "/_matrix/client/versions"
    ) -> AtriumProcess:
        """Poll ``ready_path`` until it answers below 500 (or the process dies)."""
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"atrium exited with {self.proc.returncode}:\n{self.log_path.read_text()[-4000:]}"
                )
            try:
                with urllib.request.urlopen(self.url + ready_path, timeout=1) as resp:
                    if resp.status < 500:
                        return self
            except urllib.error.HTTPError as e:
                if e.code < 500:
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(
            f"atrium not ready after {timeout}s:\n{self.log_path.read_text()[-4000:]}"
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def generate(
    data_dir: Path, server_name: str, port: int, *extra: str, config_overrides: dict | None = None
) -> Path:
    """Run `atrium generate-config` and apply overrides; returns homeserver.yaml."""
    subprocess.run(
        [
            *ATRIUM,
            "generate-config",
            "--server-name",
            server_name,
            "--data-dir",
            str(data_dir),
            "--http-port",
            str(port),
            *extra,
        ],
        check=True,
        capture_output=True,
    )
    config_path = data_dir / "homeserver.yaml"
    if config_overrides:
        data = yaml.safe_load(config_path.read_text())
        data.update(config_overrides)
        config_path.write_text(yaml.safe_dump(data))
    return config_path
