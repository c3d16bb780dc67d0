"""JSON schemas of homeserver.yaml and of worker config files.

Unknown keys are errors: a typo in a key name must not silently run with the
default. docs/configuration.md lists every key with its default.
"""

from __future__ import annotations

from typing import Any

_RATE_LIMIT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "per_second": {"type": "number", "exclusiveMinimum": 0},
        "burst_count": {"type": "integer", "minimum": 1},
    },
}

_LISTENER: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["port"],
    "properties": {
        "port": {"type": "integer", "minimum": 0, "maximum": 65535},
        "bind_addresses": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "type": {"enum": ["http", "metrics"]},
        "tls": {"type": "boolean"},
        "x_forwarded": {"type": "boolean"},
        "resources": {
            "type": "array",
            "items": {
                "enum": [
                    "client",
                    "federation",
                    "keys",
                    "replication",
                    "health",
                    "metrics",
                    "admin",
                ]
            },
        },
    },
}

HOMESERVER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["server_name"],
    "properties": {
        "server_name": {"type": "string", "minLength": 1, "pattern": r"^[A-Za-z0-9.\-\[\]:]+$"},
        "public_baseurl": {"type": "string"},
        "data_dir": {"type": "string"},
        "signing_key_path": {"type": "string"},
        "database": {
            "type": "object",
            "additionalProperties": False,
            "required": ["url"],
            "properties": {
                "url": {"type": "string", "minLength": 1},
                "max_connections": {"type": "integer", "minimum": 1, "maximum": 100},
            },
        },
        "redis": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "url": {"type": "string", "pattern": "^rediss?://"},
                "channel": {"type": "string"},
            },
        },
        "listeners": {"type": "array", "items": _LISTENER, "minItems": 1},
        "enable_registration": {"type": "boolean"},
        "registration_shared_secret": {"type": ["string", "null"]},
        "max_request_size": {"type": "integer", "minimum": 1024},
        # -- VoIP (GET /voip/turnServer): see atrium/handlers/voip.py --
        "turn_uris": {"type": "array", "items": {"type": "string", "pattern": "^turns?:"}},
        "turn_shared_secret": {"type": ["string", "null"], "minLength": 1},
        "turn_username": {"type": ["string", "null"]},
        "turn_password": {"type": ["string", "null"]},
        "turn_user_lifetime": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h|d)$"},
        "rate_limits": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "message": _RATE_LIMIT,
                "login": _RATE_LIMIT,
                "registration": _RATE_LIMIT,
                "enabled": {"type": "boolean"},
            },
        },
        "log_level": {"enum": ["DEBUG", "INFO", "WARNING", "ERROR"]},
        "log_file": {"type": ["string", "null"]},
        "worker_replication_secret": {"type": ["string", "null"], "minLength": 16},
        "stream_writers": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                name: {"type": "array", "items": {"type": "string"}, "minItems": 1}
                for name in (
                    "events",
                    "typing",
                    "to_device",
                    "account_data",
                    "receipts",
                    "presence",
                    "push_rules",
                )
            },
        },
        "instance_map": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["host", "port"],
                "properties": {
                    "host": {"type": "string"},
                    "port": {"type": "integer"},
                    "tls": {"type": "boolean"},
                },
            },
        },
        "replication": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "ping_interval": {"type": "number", "exclusiveMinimum": 0},
                "ping_timeout": {"type": "number", "exclusiveMinimum": 0},
            },
        },
        "health": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"max_stream_lag": {"type": "integer", "minimum": 0}},
        },
        "federation": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "port": {"type": "integer"},
                "tls_certificate_path": {"type": ["string", "null"]},
                "tls_private_key_path": {"type": ["string", "null"]},
                "verify_certificates": {"type": "boolean"},
                "ca_file": {"type": ["string", "null"]},
                "allow_private_ips": {"type": "boolean"},
                "enabled": {"type": "boolean"},
                # -- wt/fed: see docs/federation.md --
                "bind_addresses": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "trusted_key_servers": {"type": "array", "items": {"type": "string"}},
                "sender_instances": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                },
                "old_verify_keys": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["key", "expired_ts"],
                        "properties": {
                            "key": {"type": "string"},
                            "expired_ts": {"type": "integer"},
                        },
                    },
                },
            },
        },
    },
}

WORKER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["worker_name", "worker_app"],
    "properties": {
        "worker_name": {"type": "string", "pattern": r"^[A-Za-z0-9_\-]+$"},
        "worker_app": {
            "enum": ["sync", "federation_reader", "event_writer", "generic", "federation_sender"]
        },
        "listeners": {"type": "array", "items": _LISTENER},
        "log_level": {"enum": ["DEBUG", "INFO", "WARNING", "ERROR"]},
        "log_file": {"type": ["string", "null"]},
    },
}
