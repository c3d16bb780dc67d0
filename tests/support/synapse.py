"""A real Synapse homeserver for interoperability tests.

Synapse pins dependencies our own environment cannot share (txredisapi<1.6),
so it lives in a virtualenv of its own:

- ``ATRIUM_TEST_SYNAPSE_PYTHON``: a Python that can ``import synapse`` (used as is);
- otherwise ``<repo>/.venv-synapse`` (ignored by git), created with
  ``pip install matrix-synapse`` the first time it is needed. Creation is
  serialised with a file lock, so pytest-xdist workers wait for each other.

``SynapseServer`` writes a configuration of its own (SQLite, a plain HTTP
client listener, a TLS federation listener with a self-signed certificate,
loopback allowed as a federation target, certificate checks off,
registration open, rate limits out of the way), starts
``synapse.app.homeserver`` and polls both listeners until they answer.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from tests.support.process import free_port

REPO = Path(__file__).resolve().parents[2]
SYNAPSE_VENV = REPO / ".venv-synapse"
# The version the interop tests were written against; a newer one is fine to try
# by pointing ATRIUM_TEST_SYNAPSE_PYTHON at it.
SYNAPSE_REQUIREMENT = "matrix-synapse==1.163.2"
PYTHON_ENV = "ATRIUM_TEST_SYNAPSE_PYTHON"
INSTALL_TIMEOUT = 1200.0
START_TIMEOUT = 120.0


class SynapseUnavailable(Exception):
    """Synapse could not be installed or started (the message says why)."""


def _can_import_synapse(python: str) -> bool:
    try:
        done = subprocess.run(
            [python, "-c", "import synapse.app.homeserver"],
            capture_output=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def synapse_python() -> str:
    """A Python interpreter with Synapse installed (see the module doc)."""
    override = os.environ.get(PYTHON_ENV)
    if override:
        if not _can_import_synapse(override):
            raise SynapseUnavailable(f"{PYTHON_ENV}={override} cannot import synapse")
        return override
    python = SYNAPSE_VENV / "bin" / "python"
    lock_path = REPO / ".venv-synapse.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and _can_import_synapse(str(python)):
            return str(python)
        log = REPO / ".venv-synapse.log"
        try:
            if not python.exists():
                subprocess.run(
                    [sys.executable, "-m", "venv", str(SYNAPSE_VENV)],
                    check=True,
                    capture_output=True,
                    timeout=300,
                )
            with open(log, "wb") as out:
                subprocess.run(
                    [str(python), "-m", "pip", "install", "-q", SYNAPSE_REQUIREMENT],
                    check=True,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=INSTALL_TIMEOUT,
                )
        except (OSError, subprocess.SubprocessError) as e:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise SynapseUnavailable(f"installing {SYNAPSE_REQUIREMENT} failed: {e}\n{tail}") from e
        if not _can_import_synapse(str(python)):
            raise SynapseUnavailable(f"{python} cannot import synapse after installing it")
        return str(python)


_LOG_CONFIG = """\
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: {log_file}
loggers:
  synapse.storage.SQL:
    level: WARNING
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
"""

# Far above anything a test does: Synapse's rate limiter must not shape the tests.
_UNLIMITED = {"per_second": 10000, "burst_count": 10000}


class SynapseServer:
    """One Synapse process on free loopback ports (``localhost:<federation port>``)."""

    def __init__(self, python: str, data_dir: Path) -> None:
        self.python = python
        self.data_dir = data_dir
        self.client_port = free_port()
        self.fed_port = free_port()
        self.server_name = f"localhost:{self.fed_port}"
        self.log_path = data_dir / "homeserver.log"
        self.stdout_path = data_dir / "stdout.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def federation_url(self) -> str:
        return f"https://127.0.0.1:{self.fed_port}"

    def write_config(self) -> Path:
        from signedjson.key import generate_signing_key, write_signing_keys

        from atrium.federation.tls import generate_self_signed_certificate

        d = self.data_dir
        d.mkdir(parents=True, exist_ok=True)
        cert, key = d / "tls.crt", d / "tls.key"
        generate_self_signed_certificate("localhost", cert, key)
        with open(d / "signing.key", "w") as f:
            write_signing_keys(f, [generate_signing_key("a_" + secrets.token_hex(2))])
        (d / "log.yaml").write_text(_LOG_CONFIG.format(log_file=self.log_path))
        config = {
            "server_name": self.server_name,
            "pid_file": str(d / "homeserver.pid"),
            "listeners": [
                {
                    "port": self.client_port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "resources": [{"names": ["client"], "compress": False}],
                },
                {
                    "port": self.fed_port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": True,
                    "resources": [{"names": ["federation", "keys"], "compress": False}],
                },
            ],
            "tls_certificate_path": str(cert),
            "tls_private_key_path": str(key),
            "federation_verify_certificates": False,
            # Other test servers live on loopback: allow it as a federation target
            # (the default blocklist covers it).
            "ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
            "database": {"name": "sqlite3", "args": {"database": str(d / "homeserver.db")}},
            "log_config": str(d / "log.yaml"),
            "media_store_path": str(d / "media"),
            "signing_key_path": str(d / "signing.key"),
            "macaroon_secret_key": secrets.token_hex(16),
            "form_secret": secrets.token_hex(16),
            "registration_shared_secret": secrets.token_hex(16),
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "report_stats": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "presence": {"enabled": False},
            # No default_room_version: Synapse's own default (12 since 1.136)
            # is what its users' rooms have, and what Atrium must join.
            "rc_message": _UNLIMITED,
            "rc_registration": _UNLIMITED,
            "rc_login": {
                "address": _UNLIMITED,
                "account": _UNLIMITED,
                "failed_attempts": _UNLIMITED,
            },
            "rc_joins": {"local": _UNLIMITED, "remote": _UNLIMITED},
            "rc_joins_per_room": _UNLIMITED,
            "rc_invites": {
                "per_room": _UNLIMITED,
                "per_user": _UNLIMITED,
                "per_issuer": _UNLIMITED,
            },
            "rc_key_requests": _UNLIMITED,
            "rc_federation": {
                "window_size": 1000,
                "sleep_limit": 1000,
                "sleep_delay": 1,
                "reject_limit": 1000,
                "concurrent": 100,
            },
        }
        path = d / "homeserver.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self, timeout: float = START_TIMEOUT) -> SynapseServer:
        config_path = self.write_config()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # Our own venv's packages must not leak into Synapse's interpreter.
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        with open(self.stdout_path, "ab") as out:
            self.proc = subprocess.Popen(
                [self.python, "-m", "synapse.app.homeserver", "-c", str(config_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.data_dir,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        waiting_for = [
            (self.client_url + "/_matrix/client/versions", None),
            (self.federation_url + "/_matrix/federation/v1/version", insecure),
        ]
        while waiting_for:
            if self.proc.poll() is not None:
                raise SynapseUnavailable(
                    f"synapse exited with {self.proc.returncode}:\n{self.output_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise SynapseUnavailable(
                    f"synapse not ready after {timeout}s:\n{self.output_tail()}"
                )
            url, context = waiting_for[0]
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as response:
                    if response.status == 200:
                        waiting_for.pop(0)
                        continue
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.1)
        return self

    def output_tail(self, chars: int = 4000) -> str:
        parts = []
        for path in (self.stdout_path, self.log_path):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
