"""The generated reverse-proxy routing (``atrium routes``, deploy/nginx/atrium.conf).

Pins down: the committed nginx file is exactly what the generator writes; the
routes it is generated from are the ones a real process registers; and, by
evaluating the committed file's rules the way nginx does (first matching
regex of the map wins, the default is the master), every endpoint a client
can call reaches a process that serves it: a worker type only gets requests
for groups it serves, and every group a worker type serves does go to it.
"""

from __future__ import annotations

import io
import re
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import pytest_twisted

from atrium.app import proxy
from atrium.app.routes import STICKY_BY, WORKER_GROUPS, collect_routes
from atrium.cli import main
from atrium.http.server import Router
from tests.support.server import running_homeserver

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "deploy" / "nginx" / "atrium.conf"
SAMPLE = {
    "room_id": "%21abc%3Aexample.org",
    "room_id_or_alias": "%23alias%3Aexample.org",
    "roomId": "%21abc%3Aexample.org",
    "user_id": "%40alice%3Aexample.org",
    "state_key": "a%2Fb",
}


def _cli(*args: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["routes", *args]) == 0
    return out.getvalue()


def test_committed_nginx_config_is_the_generators_output():
    assert COMMITTED.read_text() == _cli("--format", "nginx"), (
        "deploy/nginx/atrium.conf is stale: run "
        "`atrium routes --format nginx -o deploy/nginx/atrium.conf`"
    )


@pytest_twisted.ensureDeferred
async def test_collected_routes_are_what_a_process_registers(tmp_path):
    async with running_homeserver(tmp_path) as (hs, _anon):
        real = {(r.method, r.template, r.group) for r in hs.router.routes}
    collected = {(r.method, r.template, r.group) for r in collect_routes(federation=False)}
    assert real == collected, (real - collected, collected - real)


def _nginx_rules(text: str) -> list[tuple[re.Pattern[str], str]]:
    """The (regex, upstream) lines of the routing map, in file order."""
    block = text.split('map "$request_method $request_uri" $atrium_upstream {', 1)[1]
    block = block.split("\n}", 1)[0]
    rules = []
    for line in block.splitlines():
        m = re.match(r'\s+"~(.*)" (atrium_\w+);', line)
        if m:
            rules.append((re.compile(m.group(1)), m.group(2).removeprefix("atrium_")))
        else:
            assert line.strip().startswith(("default", "#")) or not line.strip(), line
    return rules


def _route_for(rules: list[tuple[re.Pattern[str], str]], method: str, uri: str) -> str:
    for regex, upstream in rules:
        if regex.search(f"{method} {uri}"):
            return upstream
    return "master"


def _sample_uri(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE.get(m.group(1), f"x-{m.group(1)}"), template)


def test_every_nginx_rule_reaches_a_worker_serving_that_endpoint():
    rules = _nginx_rules(COMMITTED.read_text())
    routes = collect_routes()
    router = Router()
    for r in routes:
        router.register(r.method, r.template, r.servlet, r.group, r.name)
    proxied = set(proxy.PROXIED_APPS)
    seen_upstreams = set()
    for route in routes:
        if route.group in ("replication",):
            continue
        path = _sample_uri(route.template)
        for method in (route.method, "HEAD") if route.method == "GET" else (route.method,):
            served, _params, _known = router.match("GET" if method == "HEAD" else method, path)
            assert served is not None, (method, path)
            for uri in (path, path + "?access_token=t&since=s"):
                upstream = _route_for(rules, method, uri)
                seen_upstreams.add(upstream)
                if upstream != "master":
                    # The process type it goes to serves the endpoint the process matches.
                    assert served.group in WORKER_GROUPS[upstream], (method, uri, upstream)
                # And a group some worker type serves goes to that type, not the master.
                wanted = proxy.serving_app(served.group, proxy.PROXIED_APPS)
                assert upstream == (wanted or "master"), (method, uri, served.group, upstream)
    assert seen_upstreams == proxied | {"master"}


def test_unknown_paths_and_master_only_writes_go_to_the_master():
    rules = _nginx_rules(COMMITTED.read_text())
    v3 = "/_matrix/client/v3"
    assert _route_for(rules, "GET", "/_matrix/client/v3/nonsense") == "master"
    assert _route_for(rules, "PUT", f"{v3}/user/%40a%3Ab/account_data/x") == "master"
    assert _route_for(rules, "GET", f"{v3}/user/%40a%3Ab/account_data/x") == "generic"
    assert _route_for(rules, "POST", f"{v3}/login") == "master"
    assert _route_for(rules, "GET", f"{v3}/sync?timeout=30000") == "sync"
    assert _route_for(rules, "GET", f"{v3}/syncx") == "master"
    assert _route_for(rules, "PUT", f"{v3}/rooms/%21r%3Ab/send/m.room.message/1") == "event_writer"
    # A state key with an encoded slash stays one path segment, as the processes see it.
    assert _route_for(rules, "PUT", f"{v3}/rooms/%21r%3Ab/state/m.x/a%2Fb") == "event_writer"


def test_room_writes_are_keyed_by_the_room_and_syncs_by_the_token():
    text = COMMITTED.read_text()
    block = text.split("map $uri $atrium_room_key {", 1)[1].split("\n}", 1)[0]
    regexes = [
        re.compile(m.replace("(?<", "(?P<")) for m in re.findall(r'"~(.*)" \$atrium_room;', block)
    ]
    decoded = "!abc:example.org"
    for uri in (
        f"/_matrix/client/v3/rooms/{decoded}/send/m.room.message/t1",
        f"/_matrix/client/r0/rooms/{decoded}/state/m.room.topic",
        f"/_matrix/client/v3/rooms/{decoded}/redact/$ev/t2",
        f"/_matrix/client/v3/join/{decoded}",
    ):
        hits = [r.match(uri) for r in regexes]
        assert any(h and h.group("atrium_room") == decoded for h in hits), uri
    assert not any(r.match("/_matrix/client/v3/createRoom") for r in regexes)
    assert "upstream atrium_sync {\n    hash $atrium_access_token consistent;" in text
    assert "upstream atrium_event_writer {\n    hash $atrium_room_key consistent;" in text
    assert STICKY_BY == {"sync": "user", "event_writer": "room"}
    assert "location ^~ /_atrium/replication/ {" in text


def test_configured_upstreams_follow_instance_map_and_worker_files(tmp_path):
    from tests.support.process import ATRIUM  # noqa: F401  (same CLI the operators run)

    rc = main(
        [
            "generate-config",
            "--server-name",
            "example.org",
            "--data-dir",
            str(tmp_path),
            "--database-url",
            "postgresql://u@db/atrium",
            "--redis-url",
            "redis://redis",
            "--http-port",
            "9008",
            "--workers",
            "sync:2,event_writer:2,generic:1,federation_reader:1",
        ]
    )
    assert rc == 0
    data = proxy.configured_upstreams(tmp_path / "homeserver.yaml")
    assert data["master"] == ["127.0.0.1:9008"]
    assert len(data["sync"]) == 2 and len(data["event_writer"]) == 2
    assert len(set(data["sync"] + data["event_writer"])) == 4
    text = _cli("--format", "nginx", "-c", str(tmp_path / "homeserver.yaml"), "--listen", "9999")
    assert "listen 9999;" in text
    for server in data["sync"]:
        assert f"    server {server};" in text
    as_json = _cli("--format", "json", "-c", str(tmp_path / "homeserver.yaml"))
    assert '"event_writer": "room"' in as_json


@pytest.mark.parametrize("fmt", ["nginx", "json"])
def test_routes_command_without_config_names_upstreams_by_worker_type(fmt):
    text = _cli("--format", fmt)
    for app in ("master", *proxy.PROXIED_APPS):
        assert f"{app}:8008" in text


def test_json_rules_are_the_nginx_rules():
    import json

    data = json.loads(_cli("--format", "json"))
    from_json = [
        (f"^(?:{'|'.join(rule['methods'])}) {rule['uri_regex'][1:]}", rule["upstream"])
        for rule in data["rules"]
    ]
    from_nginx = [(r.pattern, u) for r, u in _nginx_rules(COMMITTED.read_text())]
    assert from_json == from_nginx
    assert data["default"] == "master" and data["refused_prefixes"] == ["/_atrium/replication/"]
