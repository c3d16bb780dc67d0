"""A real nginx in front of a test deployment, with the generated routing.

``NginxProxy`` writes a main config around the file ``atrium routes
--format nginx`` generated (own prefix, pid, temp directories and logs
under the test's directory, a free port, not a daemon), starts the OS
package's ``nginx`` binary and polls until it proxies ``/health``. Its access
log records, per request, the upstream group and address that served it and
the hash keys (access token, room), so tests can check where requests went.

Without nginx installed the test skips, except under CI=true, where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.process import free_port

LOG_FIELDS = ("method", "uri", "status", "upstream", "addr", "token", "room")


def nginx_binary() -> str:
    """Path of the nginx binary; skips the test (fails it under CI=true) without one."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        message = "nginx is not installed (apt-get install nginx-light)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {message}")
        pytest.skip(message)
    return found


class NginxProxy:
    """One nginx process serving ``routing_conf`` (an http{} include) on a free port."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.binary = nginx_binary()
        self.proc: subprocess.Popen[bytes] | None = None
        self.routing_conf = directory / "atrium.conf"
        self.access_log = directory / "access.log"
        self.error_log = directory / "error.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def listen(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _main_conf(self) -> Path:
        temp = self.dir / "temp"
        for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (temp / name).mkdir(parents=True, exist_ok=True)
        fields = "\\t".join(
            [
                "$request_method",
                "$uri",
                "$status",
                "$atrium_upstream",
                "$upstream_addr",
                "$atrium_access_token",
                "$atrium_room_key",
            ]
        )
        # As root, nginx's worker would switch to "nobody", which may not
        # write the test's temp directories.
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf = self.dir / "nginx.conf"
        conf.write_text(
            f"""{user}daemon off;
worker_processes 1;
pid {self.dir / "nginx.pid"};
error_log {self.error_log} info;
events {{ worker_connections 512; }}
http {{
    log_format atrium escape=none "{fields}";
    access_log {self.access_log} atrium;
    client_body_temp_path {temp / "body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};
    include {self.routing_conf};
}}
"""
        )
        return conf

    def _args(self) -> list[str]:
        conf = self._main_conf()
        return [self.binary, "-p", str(self.dir), "-c", str(conf), "-e", str(self.error_log)]

    def check(self) -> None:
        """``nginx -t`` on the routing file: syntax, directives, upstream names resolving."""
        check = subprocess.run([*self._args(), "-t"], capture_output=True, text=True)
        assert check.returncode == 0, f"nginx -t failed:\n{check.stderr}"

    def start(self, timeout: float = 30.0) -> NginxProxy:
        self.check()
        args = self._args()
        log = open(self.dir / "nginx.out", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited:\n{self.error_log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"nginx not proxying after {timeout}s:\n{self.error_log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def requests(self) -> list[dict[str, str]]:
        """The access log so far, one dict (LOG_FIELDS) per request."""
        if not self.access_log.exists():
            return []
        out = []
        for line in self.access_log.read_text().splitlines():
            values = line.split("\t")
            if len(values) == len(LOG_FIELDS):
                out.append(dict(zip(LOG_FIELDS, values, strict=True)))
        return out
