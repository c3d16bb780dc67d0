"""Every key the config parser accepts is described in docs/configuration.md.

The keys are read from the JSON schemas the parser validates against
(atrium/config/schema.py), so a key added there without a line in the
operators' reference fails here. Notation in the docs: ``a.b`` for nested
keys, ``listeners[].port`` for the items of a list, ``instance_map.<name>.host``
for a mapping with keys of the operator's choosing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atrium.config.schema import HOMESERVER_SCHEMA, WORKER_SCHEMA

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def schema_keys(schema: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of every leaf key ``schema`` accepts (a section's own name
    is not a key an operator sets a value for; its keys are)."""
    keys: list[str] = []
    for name, sub in schema.get("properties", {}).items():
        key = f"{prefix}{name}"
        nested = _nested(sub, key)
        keys.extend(nested or [key])
    return keys


def _nested(sub: dict[str, Any], key: str) -> list[str]:
    if sub.get("type") == "array" and isinstance(sub.get("items"), dict):
        return schema_keys(sub["items"], f"{key}[].")
    nested = schema_keys(sub, f"{key}.")
    extra = sub.get("additionalProperties")
    if isinstance(extra, dict):
        nested.extend(_nested(extra, f"{key}.<name>") or [f"{key}.<name>"])
    return nested


def test_schema_keys_walk_nested_sections():
    keys = schema_keys(HOMESERVER_SCHEMA)
    for expected in (
        "database.url",
        "listeners[].port",
        "rate_limits.message.per_second",
        "instance_map.<name>.host",
        "health.max_stream_lag",
    ):
        assert expected in keys


def test_every_config_key_is_documented():
    text = DOCS.read_text()
    missing = [
        key
        for key in schema_keys(HOMESERVER_SCHEMA) + schema_keys(WORKER_SCHEMA)
        if f"`{key}`" not in text
    ]
    assert not missing, f"docs/configuration.md does not describe: {missing}"
