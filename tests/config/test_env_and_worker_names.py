"""Container support in config loading: ``${VAR}`` values from the environment,
``--worker-name`` templates ({hostname}) for scaled replicas, ``generate-key``."""

from __future__ import annotations

import socket

import pytest
import yaml

from atrium.cli import main
from atrium.config.homeserver import ConfigError, expand_env, load_config

HS = {
    "server_name": "${TEST_SERVER_NAME:-fallback.test}",
    "database": {"url": "postgresql://u:${TEST_DB_PASSWORD}@127.0.0.1/db"},
    "redis": {"url": "redis://127.0.0.1:6379"},
    "worker_replication_secret": "${TEST_REPLICATION_SECRET}",
    "signing_key_path": "keys/signing.key",
}
WORKER = {"worker_name": "sync1", "worker_app": "sync"}


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_DB_PASSWORD", "pw")
    monkeypatch.setenv("TEST_REPLICATION_SECRET", "a-secret-of-enough-length")
    monkeypatch.delenv("TEST_SERVER_NAME", raising=False)
    hs, worker = tmp_path / "homeserver.yaml", tmp_path / "sync1.yaml"
    hs.write_text(yaml.safe_dump(HS))
    worker.write_text(yaml.safe_dump(WORKER))
    return str(hs), str(worker)


def test_values_come_from_the_environment_or_their_default(files, monkeypatch):
    config = load_config([files[0]])
    assert config.server_name == "fallback.test"
    assert config.database_url == "postgresql://u:pw@127.0.0.1/db"
    monkeypatch.setenv("TEST_SERVER_NAME", "env.test")
    assert load_config([files[0]]).server_name == "env.test"


def test_an_unset_variable_names_the_key(files, monkeypatch):
    monkeypatch.delenv("TEST_REPLICATION_SECRET")
    with pytest.raises(ConfigError, match="worker_replication_secret: environment variable"):
        load_config([files[0]])
    assert expand_env({"a": ["$notavar", 3]}, "x") == {"a": ["$notavar", 3]}


def test_worker_name_template_uses_the_hostname(files):
    config = load_config(list(files), "sync-{hostname}")
    host = socket.gethostname().split(".", 1)[0]
    assert config.worker_name.startswith("sync-") and len(config.worker_name) > 5
    assert all(c.isalnum() or c in "-_" for c in config.worker_name)
    assert host.replace(".", "-")[:3] in config.worker_name
    assert load_config(list(files)).worker_name == "sync1"


def test_the_worker_command_takes_the_name_from_env(files, monkeypatch, capsys):
    # An invalid name from the environment reaches the loader (and is refused there).
    monkeypatch.setenv("ATRIUM_WORKER_NAME", "bad name!")
    assert main(["worker", "-c", files[0], "-c", files[1]]) == 2
    assert "worker_name" in capsys.readouterr().err


def test_generate_key_writes_once(files, tmp_path, capsys):
    assert main(["generate-key", "-c", files[0]]) == 0
    key = tmp_path / "keys" / "signing.key"
    first = key.read_text()
    assert first.startswith("ed25519 ") and oct(key.stat().st_mode & 0o777) == "0o600"
    assert main(["generate-key", "-c", files[0]]) == 0
    assert key.read_text() == first
    assert "kept" in capsys.readouterr().out
