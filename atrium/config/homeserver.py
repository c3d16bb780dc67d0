"""``HomeServerConfig``: homeserver.yaml (and, for a worker, its worker file)
turned into one validated, typed object.

Relative paths in a config file are relative to the directory of that file,
so a data directory can be moved as a whole.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any

import attrs
import jsonschema
import yaml

from atrium.config.schema import HOMESERVER_SCHEMA, WORKER_SCHEMA

MASTER_INSTANCE = "master"


class ConfigError(Exception):
    """A config mistake; ``str()`` is one line naming the key and the problem."""

    def __init__(self, key: str, message: str, path: str | None = None) -> None:
        self.key = key
        self.message = message
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{key}: {message}")


@attrs.frozen
class RateLimit:
    per_second: float
    burst_count: int


@attrs.frozen
class Listener:
    port: int
    bind_addresses: tuple[str, ...] = ("127.0.0.1",)
    type: str = "http"
    tls: bool = False
    # Behind a reverse proxy: the client's address is the last one the proxy
    # added to X-Forwarded-For (rate limits are per client address).
    x_forwarded: bool = False
    resources: tuple[str, ...] = ("client", "federation", "keys", "health", "admin")


@attrs.frozen
class InstanceLocation:
    host: str
    port: int
    tls: bool = False

    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"


@attrs.frozen
class HomeServerConfig:
    server_name: str
    config_dir: Path
    data_dir: Path
    signing_key_path: Path
    database_url: str
    database_max_connections: int = 5
    redis_url: str | None = None
    redis_channel: str | None = None
    public_baseurl: str | None = None
    listeners: tuple[Listener, ...] = (Listener(port=8008),)
    enable_registration: bool = False
    registration_shared_secret: str | None = None
    max_request_size: int = 10 * 1024 * 1024
    turn_uris: tuple[str, ...] = ()
    turn_shared_secret: str | None = None
    turn_username: str | None = None
    turn_password: str | None = None
    turn_user_lifetime_seconds: int = 3600
    rate_limits_enabled: bool = True
    rate_limit_message: RateLimit = RateLimit(10.0, 50)
    rate_limit_login: RateLimit = RateLimit(0.17, 3)
    rate_limit_registration: RateLimit = RateLimit(0.17, 3)
    log_level: str = "INFO"
    log_file: str | None = None
    worker_replication_secret: str | None = None
    stream_writers: dict[str, tuple[str, ...]] = attrs.field(factory=dict)
    instance_map: dict[str, InstanceLocation] = attrs.field(factory=dict)
    max_stream_lag: int = 1000
    # Seconds between PINGs every process sends on the bus, and how long the
    # master waits without hearing a process before it clears its syncing users.
    replication_ping_interval: float = 5.0
    replication_ping_timeout: float = 30.0
    federation: dict[str, Any] = attrs.field(factory=dict)
    # Set when a worker file was loaded on top of homeserver.yaml.
    worker_name: str = MASTER_INSTANCE
    worker_app: str | None = None

    @property
    def instance_name(self) -> str:
        return self.worker_name

    @property
    def is_worker(self) -> bool:
        return self.worker_app is not None

    @property
    def uses_redis(self) -> bool:
        return self.redis_url is not None

    def writers_for(self, stream: str) -> tuple[str, ...]:
        """Instances that write ``stream``; the master when none are configured."""
        return self.stream_writers.get(stream, (MASTER_INSTANCE,))

    def baseurl(self) -> str:
        if self.public_baseurl:
            return self.public_baseurl.rstrip("/") + "/"
        listener = self.listeners[0]
        host = listener.bind_addresses[0]
        return f"http://{host}:{listener.port}/"


# Durations ("turn_user_lifetime: 1h"): a unit is required. Synapse reads a
# bare number as milliseconds; guessing would be worse than refusing.
_DURATION = re.compile(r"^([0-9]+)(ms|s|m|h|d)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> int:
    """Whole seconds (at least 1) in a duration such as ``1h`` or ``90s``."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    return max(1, int(int(match.group(1)) * _UNIT_SECONDS[match.group(2)]))


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError("config", f"file not found: {path}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError("config", f"not valid YAML{where}", path) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("config", "must be a mapping of keys to values", path)
    return data


def _validate(data: dict[str, Any], schema: dict[str, Any], path: str) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(
        validator.iter_errors(data),
        key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))),
    )
    if not errors:
        return
    err = errors[0]
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        key = ".".join(str(p) for p in [*err.absolute_path, extra[0] if extra else "?"])
        raise ConfigError(key, "unknown key (check its spelling in docs/configuration.md)", path)
    key = ".".join(str(p) for p in err.absolute_path) or (
        err.validator_value[0] if err.validator == "required" else "config"
    )
    if err.validator == "required":
        missing = [k for k in err.validator_value if k not in err.instance]
        key = ".".join(str(p) for p in [*err.absolute_path, missing[0]])
        raise ConfigError(key, "is required", path)
    raise ConfigError(key, err.message, path)


def _rate_limit(data: dict[str, Any], name: str, default: RateLimit) -> RateLimit:
    section = data.get(name) or {}
    return RateLimit(
        float(section.get("per_second", default.per_second)),
        int(section.get("burst_count", default.burst_count)),
    )


def parse_listeners(items: list[dict[str, Any]]) -> tuple[Listener, ...]:
    result = []
    for item in items:
        kwargs: dict[str, Any] = {"port": item["port"]}
        if "bind_addresses" in item:
            kwargs["bind_addresses"] = tuple(item["bind_addresses"])
        for key in ("type", "tls", "x_forwarded"):
            if key in item:
                kwargs[key] = item[key]
        if "resources" in item:
            kwargs["resources"] = tuple(item["resources"])
        elif item.get("type") == "metrics":
            kwargs["resources"] = ("metrics",)
        result.append(Listener(**kwargs))
    return tuple(result)


def parse_config(
    data: dict[str, Any],
    config_path: str,
    worker: dict[str, Any] | None = None,
    worker_path: str = "",
) -> HomeServerConfig:
    """Build a HomeServerConfig from already-read YAML mappings."""
    _validate(data, HOMESERVER_SCHEMA, config_path)
    config_dir = Path(config_path).resolve().parent

    def rel(p: str) -> Path:
        path = Path(os.path.expanduser(p))
        return path if path.is_absolute() else config_dir / path

    data_dir = rel(data.get("data_dir", "."))
    database = data.get("database") or {"url": f"sqlite:///{data_dir / 'homeserver.db'}"}
    db_url = database["url"]
    if db_url.startswith("sqlite:///") and not db_url.startswith("sqlite:////"):
        # sqlite:///relative/path -> relative to the config file.
        db_url = f"sqlite:///{rel(db_url[len('sqlite:///') :])}"
    rate_limits = data.get("rate_limits") or {}
    stream_writers = {k: tuple(v) for k, v in (data.get("stream_writers") or {}).items()}
    instance_map = {
        name: InstanceLocation(loc["host"], loc["port"], loc.get("tls", False))
        for name, loc in (data.get("instance_map") or {}).items()
    }
    kwargs: dict[str, Any] = dict(
        server_name=data["server_name"],
        config_dir=config_dir,
        data_dir=data_dir,
        signing_key_path=rel(data.get("signing_key_path", str(data_dir / "signing.key"))),
        database_url=db_url,
        database_max_connections=database.get("max_connections", 5),
        redis_url=(data.get("redis") or {}).get("url"),
        redis_channel=(data.get("redis") or {}).get("channel"),
        public_baseurl=data.get("public_baseurl"),
        enable_registration=data.get("enable_registration", False),
        registration_shared_secret=data.get("registration_shared_secret"),
        max_request_size=data.get("max_request_size", 10 * 1024 * 1024),
        turn_uris=tuple(data.get("turn_uris") or ()),
        turn_shared_secret=data.get("turn_shared_secret"),
        turn_username=data.get("turn_username"),
        turn_password=data.get("turn_password"),
        turn_user_lifetime_seconds=duration_seconds(data.get("turn_user_lifetime", "1h")),
        rate_limits_enabled=rate_limits.get("enabled", True),
        rate_limit_message=_rate_limit(rate_limits, "message", RateLimit(10.0, 50)),
        rate_limit_login=_rate_limit(rate_limits, "login", RateLimit(0.17, 3)),
        rate_limit_registration=_rate_limit(rate_limits, "registration", RateLimit(0.17, 3)),
        log_level=data.get("log_level", "INFO"),
        log_file=data.get("log_file"),
        worker_replication_secret=data.get("worker_replication_secret"),
        stream_writers=stream_writers,
        instance_map=instance_map,
        max_stream_lag=(data.get("health") or {}).get("max_stream_lag", 1000),
        replication_ping_interval=float((data.get("replication") or {}).get("ping_interval", 5.0)),
        replication_ping_timeout=float((data.get("replication") or {}).get("ping_timeout", 30.0)),
        federation=data.get("federation") or {},
    )
    if "listeners" in data:
        kwargs["listeners"] = parse_listeners(data["listeners"])
    if worker is not None:
        _validate(worker, WORKER_SCHEMA, worker_path)
        kwargs["worker_name"] = worker["worker_name"]
        kwargs["worker_app"] = worker["worker_app"]
        kwargs["listeners"] = parse_listeners(worker.get("listeners") or [])
        if "log_level" in worker:
            kwargs["log_level"] = worker["log_level"]
        if "log_file" in worker:
            kwargs["log_file"] = worker["log_file"]
    config = HomeServerConfig(**kwargs)
    _check_consistency(config, config_path, worker_path)
    return config


# Streams other processes may write; every other stream is written by the master.
WORKER_WRITABLE_STREAMS = ("events",)


def _check_consistency(config: HomeServerConfig, config_path: str, worker_path: str) -> None:
    for stream, writers in config.stream_writers.items():
        if stream not in WORKER_WRITABLE_STREAMS and tuple(writers) != (MASTER_INSTANCE,):
            raise ConfigError(
                f"stream_writers.{stream}",
                f"only the master writes the {stream} stream (remove this entry)",
                config_path,
            )
        if len(set(writers)) != len(writers):
            raise ConfigError(f"stream_writers.{stream}", "lists a writer twice", config_path)
        for writer in writers:
            if writer != MASTER_INSTANCE and writer not in config.instance_map:
                raise ConfigError(
                    f"stream_writers.{stream}",
                    f"writer {writer!r} is not in instance_map",
                    config_path,
                )
    if any(w != MASTER_INSTANCE for ws in config.stream_writers.values() for w in ws):
        # The master must reach the writers too (send_events, catch-up).
        if not config.redis_url:
            raise ConfigError(
                "redis.url", "is required when stream_writers name workers", config_path
            )
        if not config.worker_replication_secret:
            raise ConfigError(
                "worker_replication_secret",
                "is required when stream_writers name workers",
                config_path,
            )
    if config.is_worker:
        if not config.worker_replication_secret:
            raise ConfigError(
                "worker_replication_secret", "is required when running workers", config_path
            )
        if not config.redis_url:
            raise ConfigError("redis.url", "is required when running workers", config_path)
        if config.database_url.startswith("sqlite"):
            raise ConfigError(
                "database.url",
                "workers need PostgreSQL (SQLite serves one process only)",
                config_path,
            )
        writes_events = config.worker_name in config.writers_for("events")
        if config.worker_app == "event_writer" and not writes_events:
            raise ConfigError(
                "worker_name",
                f"event_writer {config.worker_name!r} is not listed in stream_writers.events"
                " of homeserver.yaml",
                worker_path,
            )
        if writes_events and config.worker_app != "event_writer":
            raise ConfigError(
                "worker_app",
                f"{config.worker_name!r} is listed in stream_writers.events, so it must be"
                f" an event_writer, not {config.worker_app!r}",
                worker_path,
            )
        if config.worker_name == MASTER_INSTANCE:
            raise ConfigError(
                "worker_name", f"{MASTER_INSTANCE!r} is reserved for the main process", worker_path
            )


# ${NAME} or ${NAME:-default} in a string value: the environment variable.
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, path: str, key: str = "") -> Any:
    """``value`` with ``${NAME}`` / ``${NAME:-default}`` in its strings replaced
    from the environment (secrets and per-container settings stay out of the
    file); an unset variable without a default is a ConfigError naming the key."""
    if isinstance(value, dict):
        return {k: expand_env(v, path, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, path, f"{key}.{i}") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def one(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(key or "config", f"environment variable {name} is not set", path)

    return _ENV_REF.sub(one, value)


def worker_name_from_template(template: str) -> str:
    """``--worker-name`` / ATRIUM_WORKER_NAME: ``{hostname}`` becomes this host's
    name (a container's), so replicas of one scaled service get distinct names."""
    host = re.sub(r"[^A-Za-z0-9_\-]", "-", socket.gethostname().split(".", 1)[0])
    return template.replace("{hostname}", host)


def load_config(paths: list[str], worker_name: str | None = None) -> HomeServerConfig:
    """Load homeserver.yaml, plus a worker file when a second path is given.

    ``worker_name`` (a template, see ``worker_name_from_template``) replaces
    the worker file's ``worker_name``.
    """
    if not paths:
        raise ConfigError("config", "no config file given (use -c homeserver.yaml)")
    data = expand_env(_read_yaml(paths[0]), paths[0])
    worker = expand_env(_read_yaml(paths[1]), paths[1]) if len(paths) > 1 else None
    if len(paths) > 2:
        raise ConfigError("config", "at most two files: homeserver.yaml and one worker file")
    if worker is not None and worker_name:
        worker["worker_name"] = worker_name_from_template(worker_name)
    return parse_config(data, paths[0], worker, paths[1] if len(paths) > 1 else "")
