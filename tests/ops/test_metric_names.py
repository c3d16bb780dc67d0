"""Every metric the alert rules and the Grafana dashboard query is one the code exports.

A renamed metric would otherwise leave an alert that can never fire and a
dashboard panel that is silently empty. The names are read from
deploy/prometheus/alerts.yml and deploy/grafana/atrium-dashboard.json and
checked against the Prometheus registry once every atrium module is imported
(each registers its metrics at import time), with the sample suffixes each
metric type produces (``_total`` for counters, ``_bucket`` for histograms...).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import atrium

ROOT = Path(__file__).resolve().parents[2]
_NAME = re.compile(r"\batrium_[a-z0-9_]+\b")

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "unknown": ("",),
}


def _exported_names() -> set[str]:
    for info in pkgutil.walk_packages(atrium.__path__, "atrium."):
        importlib.import_module(info.name)
    names: set[str] = set()
    for family in REGISTRY.collect():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
        names.update(sample.name for sample in family.samples)
    return names


def _alert_expressions() -> list[str]:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads((ROOT / "deploy/grafana/atrium-dashboard.json").read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def test_alerts_and_dashboard_query_only_exported_metrics():
    exported = _exported_names()
    for source, expressions in (
        ("alerts.yml", _alert_expressions()),
        ("atrium-dashboard.json", _dashboard_expressions()),
    ):
        assert expressions, source
        used = {name for expr in expressions for name in _NAME.findall(expr)}
        assert used, source
        unknown = sorted(used - exported)
        assert not unknown, f"{source} queries metrics the code never exports: {unknown}"


def test_operations_metrics_are_exported():
    """What docs/workers.md promises operators: replication link, stream lag, requests, caches."""
    exported = _exported_names()
    for name in (
        "atrium_replication_connected",
        "atrium_stream_position",
        "atrium_stream_writer_position",
        "atrium_http_requests_total",
        "atrium_http_request_seconds_bucket",
        "atrium_cache_hits_total",
        "atrium_cache_misses_total",
    ):
        assert name in exported, name
