"""Reverse-proxy routing generated from the route table (``atrium routes``).

The endpoints come from the servlets themselves (``collect_routes``: every
route with its group); which worker type serves a group comes from
``WORKER_GROUPS``. ``routing_table`` joins the two into rules "these methods
on paths matching this regex go to this worker type"; ``render_nginx`` and
``render_json`` write them out. Paths with no rule go to the master, which
serves everything; the process-to-process groups (``INTERNAL_GROUPS``) are
refused at the edge.

Rules match the raw request URI (path and query string), exactly what the
processes' own router matches: a percent-encoded ``/`` inside a state key
stays inside its path segment.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from atrium.api.client.sync import MAX_TIMEOUT_MS
from atrium.app.routes import (
    INTERNAL_GROUPS,
    STICKY_BY,
    WORKER_GROUPS,
)
from atrium.http.server import CLIENT_PREFIXES, Route

MASTER = "master"
# Worker types with public endpoints, in the order rules prefer them.
PROXIED_APPS: tuple[str, ...] = ("sync", "event_writer", "generic", "federation_reader")
# Without a config: one upstream per worker type, named after it, all on the
# port every container of deploy/docker-compose uses (docker's DNS gives a
# scaled service's replicas, and both event writers share the alias).
DEFAULT_PORT = 8008
# Path parameters whose value a room-sticky upstream hashes.
ROOM_PARAMS = ("room_id", "room_id_or_alias", "roomId")

_PARAM = re.compile(r"\{(\w+)\}")
_CLIENT_VERSIONS = "(?:" + "|".join(p.rsplit("/", 1)[1] for p in CLIENT_PREFIXES) + ")"
_CLIENT_BASE = CLIENT_PREFIXES[0].rsplit("/", 1)[0]


@attrs.frozen
class ProxyRule:
    """Requests with one of ``methods`` whose raw URI matches ``uri_regex`` go to ``app``."""

    methods: tuple[str, ...]
    uri_regex: str
    app: str
    group: str
    templates: tuple[str, ...]


def _template_regex(template: str, param: str) -> str:
    """A regex for a path template; parameters match ``param``."""
    parts = _PARAM.split(template)
    return "".join(param if i % 2 else re.escape(p) for i, p in enumerate(parts))


def _client_rest(template: str) -> tuple[str, str]:
    """(version prefix, rest) of a client-server path; ("", template) otherwise."""
    for prefix in CLIENT_PREFIXES:
        if template.startswith(prefix + "/"):
            return prefix, template[len(prefix) :]
    return "", template


# Groups every process serves (/health): through the proxy, the master answers.
EVERY_PROCESS_GROUPS: frozenset[str] = frozenset.intersection(*WORKER_GROUPS.values())


def serving_app(group: str, apps: Iterable[str]) -> str | None:
    """The first of ``apps`` (preference order) serving ``group``; None: the master."""
    if group in EVERY_PROCESS_GROUPS:
        return None
    for app in apps:
        if group in WORKER_GROUPS[app]:
            return app
    return None


def routing_table(routes: Sequence[Route], apps: Iterable[str]) -> list[ProxyRule]:
    """Rules for the routes some worker type in ``apps`` serves (the rest: master).

    A path registered under every client API version is one rule. Literal
    paths come first, then parameterised ones in registration order: the
    order the processes' own router tries them.
    """
    present = [a for a in PROXIED_APPS if a in set(apps)]
    # (rest of path, app, group) -> {method: {version prefixes}}
    merged: dict[tuple[str, str, str], dict[str, set[str]]] = {}
    for route in routes:
        if route.group in INTERNAL_GROUPS:
            continue
        app = serving_app(route.group, present)
        if app is None:
            continue
        prefix, rest = _client_rest(route.template)
        versions = merged.setdefault((rest, app, route.group), {})
        for method in (route.method, "HEAD") if route.method == "GET" else (route.method,):
            versions.setdefault(method, set()).add(prefix)
    # Split further by the exact set of versions a method is registered under.
    rules: list[tuple[bool, ProxyRule]] = []
    for (rest, app, group), by_method in merged.items():
        by_prefixes: dict[frozenset[str], list[str]] = {}
        for method, registered in by_method.items():
            by_prefixes.setdefault(frozenset(registered), []).append(method)
        for prefixes, methods in by_prefixes.items():
            path = _template_regex(rest, "[^/?]+")
            if prefixes == frozenset(CLIENT_PREFIXES):
                lead = re.escape(_CLIENT_BASE) + "/" + _CLIENT_VERSIONS
                templates = tuple(p + rest for p in CLIENT_PREFIXES)
            elif prefixes == {""}:
                lead, templates = "", (rest,)
            else:
                ordered = sorted(prefixes)
                lead = "(?:" + "|".join(re.escape(p) for p in ordered) + ")"
                templates = tuple(p + rest for p in ordered)
            rule = ProxyRule(
                tuple(sorted(methods)), f"^{lead}{path}(?:\\?|$)", app, group, templates
            )
            rules.append(("{" in rest, rule))
    return [r for literal in (False, True) for has_param, r in rules if has_param == literal]


def internal_prefixes(routes: Sequence[Route]) -> list[str]:
    """The path prefix of the groups a proxy must not expose (their common parent)."""
    statics = [r.template.split("{", 1)[0] for r in routes if r.group in INTERNAL_GROUPS]
    if not statics:
        return []
    common = os.path.commonprefix(statics)
    return [common[: common.rindex("/") + 1]]


def room_key_regexes(rules: Sequence[ProxyRule]) -> list[str]:
    """Regexes over the decoded path ($uri) capturing the room of room-sticky rules."""
    out: list[str] = []
    for rule in rules:
        if STICKY_BY.get(rule.app) != "room":
            continue
        for template in rule.templates:
            prefix, rest = _client_rest(template)
            names = _PARAM.findall(rest)
            room = next((n for n in names if n in ROOM_PARAMS), None)
            if room is None:
                continue
            parts = _PARAM.split(rest)
            body = "".join(
                ("(?<atrium_room>[^/]+)" if p == room else "[^/]+") if i % 2 else re.escape(p)
                for i, p in enumerate(parts)
            )
            lead = re.escape(_CLIENT_BASE) + "/[^/]+" if prefix else ""
            regex = f"^{lead}{body}$"
            if regex not in out:
                out.append(regex)
    return out


# -- upstreams ----------------------------------------------------------------------------


def default_upstreams(port: int = DEFAULT_PORT) -> dict[str, list[str]]:
    """One server per type, named after it (docker-compose service names / aliases)."""
    return {app: [f"{app}:{port}"] for app in (MASTER, *PROXIED_APPS)}


def _address(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def configured_upstreams(
    config_path: Path, worker_files: Sequence[Path] | None = None
) -> dict[str, list[str]]:
    """Upstreams of a deployment: homeserver.yaml and its worker files.

    Worker files default to ``workers/*.yaml`` beside homeserver.yaml (what
    ``generate-config --workers`` writes). A worker is reached at its
    ``instance_map`` entry, else at its HTTP listener.
    """
    from atrium.config.homeserver import load_config

    config = load_config([str(config_path)])
    if MASTER in config.instance_map:
        master = config.instance_map[MASTER]
        upstreams: dict[str, list[str]] = {MASTER: [_address(master.host, master.port)]}
    else:
        http = next(lst for lst in config.listeners if lst.type == "http")
        upstreams = {MASTER: [_address(http.bind_addresses[0], http.port)]}
    if worker_files is None:
        worker_files = sorted((config_path.parent / "workers").glob("*.yaml"))
    for path in worker_files:
        worker = load_config([str(config_path), str(path)])
        if worker.worker_app not in PROXIED_APPS:
            continue
        location = config.instance_map.get(worker.worker_name)
        if location is not None:
            address = _address(location.host, location.port)
        else:
            http = next(lst for lst in worker.listeners if lst.type == "http")
            address = _address(http.bind_addresses[0], http.port)
        upstreams.setdefault(worker.worker_app, []).append(address)
    return upstreams


# -- output -------------------------------------------------------------------------------


def _upstream_name(app: str) -> str:
    return f"atrium_{app}"


def render_json(routes: Sequence[Route], upstreams: Mapping[str, Sequence[str]]) -> str:
    rules = routing_table(routes, upstreams)
    data: dict[str, Any] = {
        "upstreams": {app: list(servers) for app, servers in upstreams.items()},
        "sticky": {app: STICKY_BY[app] for app in upstreams if app in STICKY_BY},
        "default": MASTER,
        "refused_prefixes": internal_prefixes(routes),
        "rules": [
            {
                "methods": list(r.methods),
                "uri_regex": r.uri_regex,
                "upstream": r.app,
                "group": r.group,
                "paths": list(r.templates),
            }
            for r in rules
        ],
        "room_key_regexes": room_key_regexes(rules),
    }
    return json.dumps(data, indent=2) + "\n"


NGINX_HEADER = """\
# Atrium reverse-proxy routing for nginx (an http{} context include).
# GENERATED by `atrium routes --format nginx{args}`: do not edit; regenerate
# (docs/deployment.md). Each rule comes from the servlets' route groups and
# the worker types serving them (atrium/app/routes.py); anything without a
# rule goes to the master, which serves every endpoint.
"""


def render_nginx(
    routes: Sequence[Route],
    upstreams: Mapping[str, Sequence[str]],
    *,
    listen: str = "8008",
    max_body_size: int = 10 * 1024 * 1024,
    generated_by: str = "",
) -> str:
    rules = routing_table(routes, upstreams)
    out = [NGINX_HEADER.replace("{args}", generated_by), ""]
    out.append("# The access token (header or query parameter): pins a user's /sync to one worker.")
    out.append("map $http_authorization $atrium_access_token {")
    out.append('    "~*^bearer\\s+(?<atrium_token>\\S+)" $atrium_token;')
    out.append("    default $arg_access_token;")
    out.append("}")
    out.append("")
    out.append("# The room ID in the path (decoded): pins a room's writes to one event writer.")
    out.append("map $uri $atrium_room_key {")
    for regex in room_key_regexes(rules):
        out.append(f'    "~{regex}" $atrium_room;')
    out.append("    default $atrium_access_token;")
    out.append("}")
    out.append("")
    keys = {"user": "$atrium_access_token", "room": "$atrium_room_key"}
    for app, servers in upstreams.items():
        out.append(f"upstream {_upstream_name(app)} {{")
        sticky = STICKY_BY.get(app)
        if sticky is not None:
            out.append(f"    hash {keys[sticky]} consistent;")
        for server in servers:
            out.append(f"    server {server};")
        out.append("}")
        out.append("")
    out.append("# Method and raw request URI -> upstream. First matching rule wins.")
    out.append('map "$request_method $request_uri" $atrium_upstream {')
    out.append(f"    default {_upstream_name(MASTER)};")
    for rule in rules:
        methods = "|".join(rule.methods)
        regex = rule.uri_regex[1:]  # after the "^"
        out.append(f'    "~^(?:{methods}) {regex}" {_upstream_name(rule.app)};  # {rule.group}')
    out.append("}")
    out.append("")
    body_mb = max(1, -(-max_body_size // (1024 * 1024)))
    out += [
        "server {",
        f"    listen {listen};",
        "    server_name _;",
        f"    client_max_body_size {body_mb}m;",
    ]
    for prefix in internal_prefixes(routes):
        out += [
            "    # Process-to-process endpoints: never from outside.",
            f"    location ^~ {prefix} {{",
            "        default_type application/json;",
            '        return 404 \'{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}\';',
            "    }",
        ]
    out += [
        "    location / {",
        "        proxy_pass http://$atrium_upstream;",
        "        proxy_http_version 1.1;",
        '        proxy_set_header Connection "";',
        "        proxy_set_header Host $host;",
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "        proxy_set_header X-Forwarded-Proto $scheme;",
        "        # /sync long-polls for up to the longest timeout the server holds.",
        f"        proxy_read_timeout {MAX_TIMEOUT_MS // 1000 + 60}s;",
        "        proxy_buffering off;",
        "    }",
        "}",
    ]
    return "\n".join(out) + "\n"
