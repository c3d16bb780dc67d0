"""Worker start-up refusals: one clear line on stderr and exit status 2.

An unknown key in a worker file, an event writer missing from
``stream_writers.events`` (or a non-writer listed there), a non-events
stream given to a worker, and a database whose schema is older than this
Atrium (workers never migrate: the operator runs ``atrium migrate``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import POSTGRES_URL, REDIS_URL, requires_postgres
from tests.support.db import create_postgres_database, drop_postgres_database
from tests.support.process import ATRIUM, free_port

pytestmark = pytest.mark.slow


def _generate(tmp_path: Path, database_url: str) -> Path:
    subprocess.run(
        [
            *ATRIUM,
            "generate-config",
            "--server-name",
            "checks.test",
            "--data-dir",
            str(tmp_path / "hs"),
            "--http-port",
            str(free_port()),
            "--database-url",
            database_url,
            "--redis-url",
            REDIS_URL,
            "--workers",
            "sync:1,event_writer:1",
        ],
        check=True,
        capture_output=True,
    )
    return tmp_path / "hs" / "homeserver.yaml"


def _edit(path: Path, **changes: Any) -> None:
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data))


def _run_worker(config: Path, worker: str) -> subprocess.CompletedProcess[str]:
    worker_file = config.parent / "workers" / f"{worker}.yaml"
    return subprocess.run(
        [*ATRIUM, "worker", "-c", str(config), "-c", str(worker_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.startswith("atrium:")]
    assert len(lines) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# A database URL that is never connected to: config errors come first.
UNUSED_DB = "postgresql://nobody@127.0.0.1:1/never"


def test_unknown_key_in_a_worker_file(tmp_path):
    config = _generate(tmp_path, UNUSED_DB)
    _edit(config.parent / "workers" / "sync1.yaml", worker_nmae="oops")
    _one_line_error(_run_worker(config, "sync1"), "worker_nmae", "unknown key", "sync1.yaml")


def test_event_writer_missing_from_stream_writers(tmp_path):
    config = _generate(tmp_path, UNUSED_DB)
    _edit(config, stream_writers={"events": ["master"]})
    _one_line_error(_run_worker(config, "event_writer1"), "event_writer1", "stream_writers.events")


def test_only_event_writers_may_be_listed_as_events_writers(tmp_path):
    config = _generate(tmp_path, UNUSED_DB)
    _edit(config, stream_writers={"events": ["event_writer1", "sync1"]})
    _one_line_error(_run_worker(config, "sync1"), "sync1", "event_writer")


def test_non_event_streams_stay_with_the_master(tmp_path):
    config = _generate(tmp_path, UNUSED_DB)
    _edit(config, stream_writers={"events": ["event_writer1"], "typing": ["event_writer1"]})
    _one_line_error(_run_worker(config, "sync1"), "stream_writers.typing", "master")


@requires_postgres
def test_worker_refuses_an_outdated_schema(tmp_path):
    db_url = create_postgres_database(POSTGRES_URL)
    try:
        config = _generate(tmp_path, db_url)
        # Nobody ran the master or `atrium migrate`: the schema is empty.
        _one_line_error(_run_worker(config, "sync1"), "atrium migrate")
    finally:
        drop_postgres_database(POSTGRES_URL, db_url)
