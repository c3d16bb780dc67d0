"""Consistency checks of homeserver.yaml + worker files (one-line ConfigErrors)."""

from __future__ import annotations

from typing import Any

import pytest

from atrium.config.homeserver import ConfigError, parse_config

BASE: dict[str, Any] = {
    "server_name": "w.test",
    "database": {"url": "postgresql://u@127.0.0.1/db"},
    "redis": {"url": "redis://127.0.0.1:6379"},
    "worker_replication_secret": "a-secret-of-enough-length",
    "instance_map": {"ew1": {"host": "127.0.0.1", "port": 9001}},
    "stream_writers": {"events": ["ew1"]},
}


DROP = object()


def _config(worker: dict[str, Any] | None = None, **changes: Any):
    data = {k: v for k, v in {**BASE, **changes}.items() if v is not DROP}
    return parse_config(data, "/tmp/hs.yaml", worker, "/tmp/worker.yaml" if worker else "")


def test_a_valid_event_writer_loads():
    config = _config({"worker_name": "ew1", "worker_app": "event_writer"})
    assert config.is_worker and config.writers_for("events") == ("ew1",)
    assert config.replication_ping_interval == 5.0 and config.replication_ping_timeout == 30.0


@pytest.mark.parametrize(
    ("changes", "worker", "key"),
    [
        ({"stream_writers": {"events": ["ew1"], "typing": ["ew1"]}}, None, "stream_writers.typing"),
        ({"stream_writers": {"events": ["ew1", "ew1"]}}, None, "stream_writers.events"),
        ({"redis": DROP}, None, "redis.url"),
        ({"worker_replication_secret": None}, None, "worker_replication_secret"),
        ({}, {"worker_name": "ew2", "worker_app": "event_writer"}, "worker_name"),
        ({}, {"worker_name": "ew1", "worker_app": "sync"}, "worker_app"),
        ({}, {"worker_name": "s1", "worker_app": "sync", "listner": []}, "listner"),
        ({"replication": {"ping_timeout": 0}}, None, "replication.ping_timeout"),
    ],
)
def test_inconsistent_configs_name_the_key(changes, worker, key):
    with pytest.raises(ConfigError) as info:
        _config(worker, **changes)
    assert info.value.key == key
    assert "\n" not in str(info.value)
