"""What the schemathesis fuzzers (fuzz_client_api.py, fuzz_federation_api.py) share.

Starting a live `atrium run` on a fresh data directory (SQLite, or a throwaway
PostgreSQL database), keeping the spec's operations Atrium routes, writing a
schemathesis.toml with dictionaries of real IDs for path parameters, running
`schemathesis run` with the `not_a_server_error` check, and judging the run:
5xx answers in schemathesis' NDJSON report and ERROR records or tracebacks in
the server log are failures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

ROOT = Path(__file__).resolve().parent.parent
SPEC_DIR = ROOT.parent / "shared" / "spec"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"

# Self-signed certificates everywhere on loopback: nothing to verify.
INSECURE_TLS = ssl.create_default_context()
INSECURE_TLS.check_hostname = False
INSECURE_TLS.verify_mode = ssl.CERT_NONE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(
    base: str,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One HTTP(S) request; (status, parsed JSON body or raw bytes)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    context = INSECURE_TLS if base.startswith("https:") else None
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as resp:
            raw, code = resp.read(), resp.status
    except urllib.error.HTTPError as e:
        raw, code = e.read(), e.code
    try:
        return code, json.loads(raw) if raw else None
    except ValueError:
        return code, raw


def start_server(
    work: Path,
    port: int,
    database_url: str | None,
    server_name: str,
    extra_args: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """`atrium generate-config` + `atrium run` (rate limits off), ready when
    /_matrix/client/versions answers on ``port``; output in work/atrium.log."""
    data_dir = work / "data"
    cmd = [
        sys.executable,
        "-m",
        "atrium.cli",
        "generate-config",
        "--server-name",
        server_name,
        "--data-dir",
        str(data_dir),
        "--http-port",
        str(port),
        "--enable-registration",
        *extra_args,
    ]
    if database_url:
        cmd += ["--database-url", database_url]
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    config_path = data_dir / "homeserver.yaml"
    config = yaml.safe_load(config_path.read_text())
    config.setdefault("rate_limits", {})["enabled"] = False
    config_path.write_text(yaml.safe_dump(config))
    log = open(work / "atrium.log", "ab")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "atrium.cli", "run", "-c", str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"atrium exited: {(work / 'atrium.log').read_text()[-3000:]}")
        try:
            if call(base, "GET", "/_matrix/client/versions")[0] == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise TimeoutError("atrium did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def register(base: str, name: str) -> dict[str, str]:
    """A user registered through the client API (dummy auth)."""
    body: dict[str, Any] = {"username": name, "password": f"pw-{name}-pw"}
    code, data = call(base, "POST", "/_matrix/client/v3/register", body)
    if code == 401:
        body["auth"] = {"type": "m.login.dummy", "session": data["session"]}
        code, data = call(base, "POST", "/_matrix/client/v3/register", body)
    if code != 200:
        raise RuntimeError(f"register {name}: {code} {data}")
    return data


def seed_public_room(base: str, token: str, server_name: str) -> dict[str, str]:
    """A public room made through the client API, with a message and the
    alias ``#fuzz:<server_name>``: its room_id, message_id and alias."""
    v3 = "/_matrix/client/v3"
    code, room = call(
        base, "POST", f"{v3}/createRoom", {"preset": "public_chat", "name": "fuzz"}, token
    )
    if code != 200:
        raise RuntimeError(f"createRoom: {code} {room}")
    room_id = quote(room["room_id"], safe="")
    code, sent = call(
        base,
        "PUT",
        f"{v3}/rooms/{room_id}/send/m.room.message/setup1",
        {"msgtype": "m.text", "body": "hello"},
        token,
    )
    if code != 200:
        raise RuntimeError(f"send: {code} {sent}")
    alias = f"#fuzz:{server_name}"
    body = {"room_id": room["room_id"]}
    code, made = call(base, "PUT", f"{v3}/directory/room/{quote(alias, safe='')}", body, token)
    if code != 200:
        raise RuntimeError(f"alias: {code} {made}")
    return {"room_id": room["room_id"], "message_id": sent["event_id"], "alias": alias}


def _fill_probe_path(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def _is_real_path(path: str) -> bool:
    # The spec keeps a second form of one URL under a key with a trailing space
    # ("/rooms/{roomId}/invite " is the third-party invite): no such URL exists.
    return path == path.strip()


def implemented_operations(
    base: str, spec: dict[str, Any], prefixes: tuple[str, ...], include: str | None = None
) -> list[tuple[str, str]]:
    """(METHOD, path) of every operation under ``prefixes`` that Atrium routes
    (whose path matches the regex ``include``, when given).

    Asked without credentials: routing happens before authentication, so an
    operation Atrium does not serve answers 404/405 M_UNRECOGNIZED and nothing
    is acted on.
    """
    found = []
    for path, ops in spec["paths"].items():
        if not path.startswith(prefixes) or not _is_real_path(path):
            continue
        if include is not None and not re.search(include, path):
            continue
        for method in ops:
            if method not in ("get", "put", "post", "delete"):
                continue
            body = {} if method in ("put", "post") else None
            code, answer = call(base, method.upper(), _fill_probe_path(path), body)
            unrecognized = isinstance(answer, dict) and answer.get("errcode") == "M_UNRECOGNIZED"
            if code in (404, 405) and unrecognized:
                continue
            found.append((method.upper(), path))
    return found


def _bounded_query_objects(operation: dict[str, Any]) -> dict[str, Any]:
    """The operation with free-form object query parameters (/thirdparty's
    ``fields``) bounded: unbounded, they make request lines over the 16 KiB
    that Twisted's HTTP parser refuses (closing the connection) before Atrium
    sees the request, which schemathesis reports as a network error."""
    params = []
    for param in operation.get("parameters", []):
        schema = param.get("schema") or {}
        if param.get("in") == "query" and schema.get("type") == "object":
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                extra = {**extra, "maxLength": 80}
            schema = {
                **schema,
                "maxProperties": 4,
                "propertyNames": {"maxLength": 40},
                "additionalProperties": extra,
            }
            param = {**param, "schema": schema}
        params.append(param)
    return {**operation, "parameters": params} if params else operation


def filtered_spec(spec: dict[str, Any], ops: list[tuple[str, str]], base: str) -> dict[str, Any]:
    keep: dict[str, dict[str, Any]] = {}
    for method, path in ops:
        operation = spec["paths"][path][method.lower()]
        keep.setdefault(path, {})[method.lower()] = _bounded_query_objects(operation)
    return {**spec, "servers": [{"url": base}], "paths": keep}


def toml_str(value: str) -> str:
    return json.dumps(value)


def dictionary_config(
    dictionaries: dict[str, list[Any]],
    parameters: dict[str, tuple[str, float]],
) -> list[str]:
    """schemathesis.toml lines: named value lists and the parameters
    (``"path.roomId"``...) drawn from them with a probability."""
    lines: list[str] = []
    for name, values in dictionaries.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    for param, (name, probability) in parameters.items():
        lines.append(f'"{param}" = {{ dictionary = "{name}", probability = {probability} }}')
    lines.append("")
    return lines


def run_schemathesis(
    work: Path,
    config_path: Path,
    spec_path: Path,
    base: str,
    *,
    max_examples: int,
    workers: str,
    phases: str,
    seed: int | None,
    report_name: str = "events",
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`schemathesis run` with the not_a_server_error check; the completed
    process (output also in work/<report_name>.out) and its NDJSON report."""
    ndjson = work / "reports" / f"{report_name}.ndjson"
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    cmd = [
        st,
        "--config-file",
        str(config_path),
        "run",
        str(spec_path),
        "--url",
        base,
        "--checks",
        "not_a_server_error",
        "--max-examples",
        str(max_examples),
        "--workers",
        workers,
        "--phases",
        phases,
        "--request-timeout",
        "30",
        "--continue-on-failure",
        "--generation-database",
        "none",
        "--suppress-health-check",
        "all",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(ndjson),
        "--no-color",
        *extra_args,
    ]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    result = subprocess.run(
        cmd, cwd=work, capture_output=True, text=True, env=dict(os.environ, **(env or {}))
    )
    (work / f"{report_name}.out").write_text(result.stdout + result.stderr)
    return result, ndjson


def summary_line(output: str) -> str:
    line = next((ln for ln in reversed(output.splitlines()) if re.search(r"\bin \d", ln)), "")
    return line.strip(" =_")


_LEVEL = re.compile(r"^\S+ \S+ \S+ \S+ (ERROR|CRITICAL) ")


def log_errors(log: Path) -> list[str]:
    """Tracebacks and ERROR/CRITICAL records in the server log (Twisted's own
    log, e.g. unhandled errors in Deferreds, is routed there too)."""
    lines = log.read_text(errors="replace").splitlines()
    out = []
    for i, line in enumerate(lines):
        if _LEVEL.match(line):
            out.append(line[:300])
        elif line.startswith("Traceback (most recent call last)"):
            tail = next((x for x in lines[i + 1 :] if x and not x.startswith(" ")), "")
            out.append(f"  traceback ending in {tail[:200]}")
    return out


def by_method(ops: list[tuple[str, str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for method, _ in ops:
        out[method] = out.get(method, 0) + 1
    return out


def _events(ndjson: Path) -> list[dict[str, Any]]:
    if not ndjson.exists():
        return []
    return [json.loads(line) for line in ndjson.read_text().splitlines() if line.strip()]


def _walk(value: Any) -> Iterator[dict[str, Any]]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def interactions(ndjson: Path) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """(request, response) of every request schemathesis recorded."""
    return [
        (d["request"], d["response"] if isinstance(d.get("response"), dict) else None)
        for e in _events(ndjson)
        for d in _walk(e)
        if "request" in d and "response" in d and isinstance(d["request"], dict)
    ]


def count_cases(ndjson: Path) -> int:
    """Test cases schemathesis sent (each recorded interaction is one request)."""
    return len(interactions(ndjson))


def count_server_errors(ndjson: Path) -> int:
    count = 0
    for _, response in interactions(ndjson):
        status = response.get("status_code") if response else None
        if isinstance(status, int) and status >= 500:
            count += 1
    return count


def create_pg_database(server: str) -> str:
    import psycopg2

    name = f"fuzz_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(server)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        )
    conn.close()
    return server.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(server: str, url: str) -> None:
    import psycopg2

    conn = psycopg2.connect(server)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
    conn.close()


def report_failures(output: str, tracebacks: list[str]) -> None:
    print(output[-12000:], file=sys.stderr)
    for line in tracebacks[:50]:
        print("server log:", line, file=sys.stderr)
