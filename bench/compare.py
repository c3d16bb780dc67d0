"""Run bench/load.py against Atrium and Synapse on the same machine and database kind.

    python bench/compare.py --synapse-python /path/to/synapse-venv/bin/python
                            [--db sqlite|postgres] [--postgres URL] [load.py options...]

Synapse is installed from PyPI in a venv of its own (`pip install matrix-synapse
psycopg2-binary`: it pins txredisapi<1.6, which Atrium's venv must not get).
Each server gets a fresh data directory (and a fresh PostgreSQL database),
registration open and rate limits off; both run as one process. Prints both
results and the ratios Atrium/Synapse.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from fuzz_common import create_pg_database, drop_pg_database, free_port

HERE = Path(__file__).resolve().parent


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/_matrix/client/versions", timeout=1):
                return
        except Exception:
            time.sleep(0.2)
    raise TimeoutError(url)


def start_atrium(work: Path, port: int, db_url: str | None) -> subprocess.Popen[bytes]:
    data = work / "atrium"
    cmd = [
        sys.executable,
        "-m",
        "atrium.cli",
        "generate-config",
        "--server-name",
        "bench.local",
        "--data-dir",
        str(data),
        "--http-port",
        str(port),
        "--enable-registration",
    ]
    if db_url:
        cmd += ["--database-url", db_url]
    subprocess.run(cmd, check=True, capture_output=True)
    config_path = data / "homeserver.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["rate_limits"] = {"enabled": False}
    config["log_level"] = "WARNING"
    config_path.write_text(yaml.safe_dump(config))
    log = open(work / "atrium.log", "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "atrium.cli", "run", "-c", str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def start_synapse(
    python: str, work: Path, port: int, db_url: str | None
) -> subprocess.Popen[bytes]:
    data = work / "synapse"
    data.mkdir()
    config_path = data / "homeserver.yaml"
    subprocess.run(
        [
            python,
            "-m",
            "synapse.app.homeserver",
            "--server-name",
            "bench.local",
            "--config-path",
            str(config_path),
            "--data-directory",
            str(data),
            "--generate-config",
            "--report-stats=no",
        ],
        check=True,
        capture_output=True,
        cwd=data,
    )
    config: dict[str, Any] = yaml.safe_load(config_path.read_text())
    config["listeners"] = [
        {
            "port": port,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "tls": False,
            "x_forwarded": False,
            "resources": [{"names": ["client"], "compress": False}],
        }
    ]
    config["enable_registration"] = True
    config["enable_registration_without_verification"] = True
    unlimited = {"per_second": 100000, "burst_count": 100000}
    for key in (
        "rc_message",
        "rc_registration",
        "rc_3pid_validation",
        "rc_admin_redaction",
        "rc_room_creation",
        "rc_key_requests",
        "rc_reports",
    ):
        config[key] = unlimited
    config["rc_login"] = {"address": unlimited, "account": unlimited, "failed_attempts": unlimited}
    config["rc_joins"] = {"local": unlimited, "remote": unlimited}
    config["rc_invites"] = {"per_room": unlimited, "per_user": unlimited, "per_issuer": unlimited}
    config["trusted_key_servers"] = []
    config["suppress_key_server_warning"] = True
    config["presence"] = {"enabled": True}
    if db_url:
        from urllib.parse import urlparse

        u = urlparse(db_url)
        config["database"] = {
            "name": "psycopg2",
            "args": {
                "user": u.username or "postgres",
                "host": u.hostname,
                "port": u.port or 5432,
                "database": u.path.lstrip("/"),
                "cp_min": 5,
                "cp_max": 10,
            },
        }
    log_config = data / "bench.log.config"
    log_config.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "root": {"level": "WARNING", "handlers": []},
                "disable_existing_loggers": False,
            }
        )
    )
    config["log_config"] = str(log_config)
    config_path.write_text(yaml.safe_dump(config))
    log = open(work / "synapse.log", "wb")
    return subprocess.Popen(
        [python, "-m", "synapse.app.homeserver", "-c", str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=data,
    )


def run_load(url: str, load_args: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(HERE / "load.py"), "--url", url, *load_args],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load.py failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def bench_one(
    kind: str, starter: Any, args: argparse.Namespace, load_args: list[str]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        db_url = create_pg_database(args.postgres) if args.db == "postgres" else None
        port = free_port()
        proc = starter(work, port, db_url)
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc)
            return run_load(f"http://127.0.0.1:{port}", load_args)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            if db_url:
                drop_pg_database(args.postgres, db_url)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--synapse-python", required=True)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args, load_args = parser.parse_known_args()
    atrium = bench_one("atrium", start_atrium, args, load_args)
    synapse = bench_one(
        "synapse", lambda w, p, d: start_synapse(args.synapse_python, w, p, d), args, load_args
    )
    ratios = {
        "send_throughput_x": round(
            atrium["send"]["events_per_s"] / synapse["send"]["events_per_s"], 2
        ),
        "sync_wakeup_p50_ratio": round(
            atrium["sync"]["wakeup_p50_ms"] / synapse["sync"]["wakeup_p50_ms"], 2
        ),
        "sync_wakeup_p99_ratio": round(
            atrium["sync"]["wakeup_p99_ms"] / synapse["sync"]["wakeup_p99_ms"], 2
        ),
    }
    if "initial_sync" in atrium and "initial_sync" in synapse:
        for kind in ("first", "repeat_median", "distinct_median"):
            key = f"initial_sync_{kind}_ms"
            ratios[f"initial_sync_{kind}_ratio"] = round(
                atrium["initial_sync"][key] / synapse["initial_sync"][key], 2
            )
    print(
        json.dumps(
            {
                "db": args.db,
                "atrium": atrium,
                "synapse": synapse,
                "ratios_atrium_over_synapse": ratios,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
