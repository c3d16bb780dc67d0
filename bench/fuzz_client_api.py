"""Fuzz a live `atrium run` with schemathesis against the Matrix client-server OpenAPI spec.

    python bench/fuzz_client_api.py [--spec PATH] [--max-examples 25] [--workers 1]
                                    [--seed N] [--database-url postgresql://...]
                                    [--phases examples,coverage,fuzzing] [--keep]

What it does:
1. starts `atrium run` in a subprocess on a free port (fresh data directory,
   registration open, rate limits off; SQLite unless --database-url is given);
2. registers users and makes a room, a message, an alias and a filter, so that
   path parameters can be real IDs (schemathesis picks them from dictionaries
   most of the time, random values otherwise);
3. asks the server, without a token, for every operation of the spec: those it
   answers 404/405 M_UNRECOGNIZED are not implemented and left out (routing
   happens before authentication, so this has no side effects);
4. runs `schemathesis run` (v4) on the implemented operations with the
   `not_a_server_error` check and a Bearer token, a bounded number of examples
   per operation; logging out and leaving rooms act as spare users so the main
   session and room survive the run;
5. reads the server log: every traceback or ERROR record in it is a failure,
   whatever status the request got.

Exit status 0 only when schemathesis found no 5xx and the log has no error.
Prints a JSON summary (operations covered, test cases run, 5xx count). Takes a
few minutes with the defaults; not part of the pytest run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = ROOT.parent / "shared" / "spec" / "client-server-openapi.json"
V3 = "/_matrix/client/v3"
SERVER_NAME = "localhost"
# Operations that end the session or the membership they act with: run as spares.
SPARE_PATHS = {
    "logout": ["/_matrix/client/v3/logout"],
    "logout_all": ["/_matrix/client/v3/logout/all"],
    "leave": [
        "/_matrix/client/v3/rooms/{roomId}/leave",
        "/_matrix/client/v3/rooms/{roomId}/forget",
    ],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(
    base: str, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw, code = resp.read(), resp.status
    except urllib.error.HTTPError as e:
        raw, code = e.read(), e.code
    try:
        return code, json.loads(raw) if raw else None
    except ValueError:
        return code, raw


def start_server(work: Path, port: int, database_url: str | None) -> subprocess.Popen[bytes]:
    data_dir = work / "data"
    cmd = [
        sys.executable,
        "-m",
        "atrium.cli",
        "generate-config",
        "--server-name",
        SERVER_NAME,
        "--data-dir",
        str(data_dir),
        "--http-port",
        str(port),
        "--enable-registration",
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


def register(base: str, name: str) -> dict[str, str]:
    body: dict[str, Any] = {"username": name, "password": f"pw-{name}-pw"}
    code, data = call(base, "POST", f"{V3}/register", body)
    if code == 401:
        body["auth"] = {"type": "m.login.dummy", "session": data["session"]}
        code, data = call(base, "POST", f"{V3}/register", body)
    if code != 200:
        raise RuntimeError(f"register {name}: {code} {data}")
    return data


def make_world(base: str) -> dict[str, Any]:
    """Users, a room with a message, an alias and a filter: real path parameter values."""
    main = register(base, "fuzzer")
    friend = register(base, "friend")
    token = main["access_token"]
    code, room = call(
        base, "POST", f"{V3}/createRoom", {"preset": "public_chat", "name": "fuzz"}, token
    )
    assert code == 200, room
    room_id = room["room_id"]
    call(base, "POST", f"{V3}/rooms/{quote(room_id, safe='')}/join", {}, friend["access_token"])
    code, sent = call(
        base,
        "PUT",
        f"{V3}/rooms/{quote(room_id, safe='')}/send/m.room.message/setup1",
        {"msgtype": "m.text", "body": "hello"},
        token,
    )
    assert code == 200, sent
    alias = f"#fuzz:{SERVER_NAME}"
    call(base, "PUT", f"{V3}/directory/room/{quote(alias, safe='')}", {"room_id": room_id}, token)
    code, made = call(
        base, "POST", f"{V3}/user/{quote(main['user_id'], safe='')}/filter", {"room": {}}, token
    )
    assert code == 200, made
    # A key backup with one key, so /room_keys operations meet a real version.
    code, backup = call(
        base,
        "POST",
        f"{V3}/room_keys/version",
        {"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "k"}},
        token,
    )
    assert code == 200, backup
    key_data = {
        "first_message_index": 0,
        "forwarded_count": 0,
        "is_verified": False,
        "session_data": {"ciphertext": "c", "ephemeral": "e", "mac": "m"},
    }
    session_path = f"{V3}/room_keys/keys/{quote(room_id, safe='')}/fuzzsession"
    code, stored = call(base, "PUT", f"{session_path}?version={backup['version']}", key_data, token)
    assert code == 200, stored
    spares = {}
    for role in SPARE_PATHS:
        spare = register(base, f"spare-{role.replace('_', '-')}")
        call(base, "POST", f"{V3}/rooms/{quote(room_id, safe='')}/join", {}, spare["access_token"])
        spares[role] = spare["access_token"]
    return {
        "token": token,
        "spares": spares,
        "dictionaries": {
            "roomId": [room_id],
            "roomIdOrAlias": [room_id, alias],
            "roomAlias": [alias],
            "userId": [main["user_id"], friend["user_id"]],
            "eventId": [sent["event_id"]],
            "deviceId": [main["device_id"]],
            "filterId": [made["filter_id"]],
            "eventType": ["m.room.message", "m.room.topic", "m.room.name", "org.example.fuzz"],
            "stateKey": ["", main["user_id"]],
            "receiptType": ["m.read", "m.read.private", "m.fully_read"],
            "scope": ["global"],
            "kind": ["override", "underride", "sender", "room", "content"],
            "ruleId": [".m.rule.master", "fuzz_rule"],
            "keyName": ["displayname", "avatar_url"],
            "type": ["org.example.fuzz", "m.direct"],
            "tag": ["u.work", "m.favourite"],
            "version": [backup["version"]],
            "sessionId": ["fuzzsession"],
        },
    }


def _fill_probe_path(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def _is_real_path(path: str) -> bool:
    # The spec keeps a second form of one URL under a key with a trailing space
    # ("/rooms/{roomId}/invite " is the third-party invite): no such URL exists.
    return path == path.strip()


def implemented_operations(
    base: str, spec: dict[str, Any], include: str | None = None
) -> list[tuple[str, str]]:
    """(METHOD, path) of every client-server operation Atrium routes (whose
    path matches the regex ``include``, when given)."""
    found = []
    for path, ops in spec["paths"].items():
        if not path.startswith(("/_matrix/client/", "/.well-known/")) or not _is_real_path(path):
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


def _toml_str(value: str) -> str:
    return json.dumps(value)


def write_config(path: Path, world: dict[str, Any], token: str) -> None:
    """schemathesis.toml: the Bearer token, spare tokens per operation, ID dictionaries."""
    lines = [f"headers = {{ Authorization = {_toml_str('Bearer ' + token)} }}", ""]
    for name, values in world["dictionaries"].items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines += ["[dictionaries.timeout]", "values = [0, 1, 25]", ""]
    lines.append("[parameters]")
    for name in world["dictionaries"]:
        lines.append(f'"path.{name}" = {{ dictionary = "{name}", probability = 0.75 }}')
    # /sync holds a long-poll for `timeout` ms (up to 10 minutes): keep it short.
    lines.append('"query.timeout" = { dictionary = "timeout", probability = 1.0 }')
    lines.append('"query.version" = { dictionary = "version", probability = 0.75 }')
    lines.append("")
    for role, paths in SPARE_PATHS.items():
        for p in paths:
            lines += [
                "[[operations]]",
                f"include-path = {_toml_str(p)}",
                f"headers = {{ Authorization = {_toml_str('Bearer ' + world['spares'][role])} }}",
                "",
            ]
    path.write_text("\n".join(lines))


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=str(DEFAULT_SPEC))
    parser.add_argument("--max-examples", type=int, default=25)
    # More than one worker thread trips a CPython 3.11 bug in ast.parse under
    # threads (SystemError "AST constructor recursion depth mismatch", raised
    # inside hypothesis): schemathesis reports it as a runtime error and skips
    # the rest of that operation's phase.
    parser.add_argument("--workers", default="1")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--phases", default="examples,coverage,fuzzing")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the data dir and reports")
    parser.add_argument(
        "--include",
        default=None,
        help="only operations whose path matches this regex (e.g. 'room_keys|pushers')",
    )
    args = parser.parse_args()

    spec = json.loads(Path(args.spec).read_text())
    work = Path(tempfile.mkdtemp(prefix="atrium-fuzz-"))
    port = free_port()
    db_url = None
    if args.database_url:
        db_url = _create_pg_database(args.database_url)
    proc = start_server(work, port, db_url)
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        world = make_world(base)
        ops = implemented_operations(base, spec, args.include)
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(filtered_spec(spec, ops, base)))
        config_path = work / "schemathesis.toml"
        write_config(config_path, world, world["token"])
        reports = work / "reports"
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
            str(args.max_examples),
            "--workers",
            args.workers,
            "--phases",
            args.phases,
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
            str(reports / "events.ndjson"),
            "--no-color",
        ]
        if args.seed is not None:
            cmd += ["--seed", str(args.seed)]
        result = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        output = result.stdout + result.stderr
        (work / "schemathesis.out").write_text(output)
        summary_line = next(
            (ln for ln in reversed(output.splitlines()) if re.search(r"\bin \d", ln)), ""
        )
        cases = _count_cases(reports / "events.ndjson")
        server_errors = _count_server_errors(reports / "events.ndjson")
        tracebacks = log_errors(work / "atrium.log")
        # The run kept the main session (logouts acted as spares): otherwise
        # most operations would only have seen 401s.
        alive = call(base, "GET", f"{V3}/account/whoami", token=world["token"])[0] == 200
        summary = {
            "operations": len(ops),
            "operations_by_method": _by_method(ops),
            "test_cases": cases,
            "server_errors_5xx": server_errors,
            "schemathesis_exit": result.returncode,
            "schemathesis_summary": summary_line.strip(" =_"),
            "log_errors": len(tracebacks),
            "main_session_alive": alive,
            "seconds": round(time.monotonic() - started, 1),
            "work_dir": str(work) if args.keep else None,
        }
        print(json.dumps(summary, indent=2))
        if server_errors or tracebacks or result.returncode != 0:
            print(output[-12000:], file=sys.stderr)
            for line in tracebacks[:50]:
                print("server log:", line, file=sys.stderr)
            return 1
        return 0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if db_url:
            _drop_pg_database(args.database_url, db_url)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _by_method(ops: list[tuple[str, str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for method, _ in ops:
        out[method] = out.get(method, 0) + 1
    return out


def _events(ndjson: Path) -> list[dict[str, Any]]:
    if not ndjson.exists():
        return []
    return [json.loads(line) for line in ndjson.read_text().splitlines() if line.strip()]


def _walk(value: Any):
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _count_cases(ndjson: Path) -> int:
    """Test cases schemathesis sent (each recorded interaction is one request)."""
    return sum(1 for e in _events(ndjson) for d in _walk(e) if "request" in d and "response" in d)


def _count_server_errors(ndjson: Path) -> int:
    count = 0
    for e in _events(ndjson):
        for d in _walk(e):
            response = d.get("response")
            if "request" in d and isinstance(response, dict):
                status = response.get("status_code")
                if isinstance(status, int) and status >= 500:
                    count += 1
    return count


def _create_pg_database(server: str) -> str:
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


def _drop_pg_database(server: str, url: str) -> None:
    import psycopg2

    conn = psycopg2.connect(server)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
    conn.close()


if __name__ == "__main__":
    sys.exit(main())
