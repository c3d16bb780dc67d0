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
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fuzz_common import (
    SPEC_DIR,
    by_method,
    call,
    count_cases,
    count_server_errors,
    create_pg_database,
    dictionary_config,
    drop_pg_database,
    filtered_spec,
    free_port,
    implemented_operations,
    log_errors,
    register,
    report_failures,
    run_schemathesis,
    seed_public_room,
    start_server,
    stop_server,
    summary_line,
    toml_str,
)

DEFAULT_SPEC = SPEC_DIR / "client-server-openapi.json"
V3 = "/_matrix/client/v3"
SERVER_NAME = "localhost"
CLIENT_PREFIXES = ("/_matrix/client/", "/.well-known/")
# Operations that end the session or the membership they act with: run as spares.
SPARE_PATHS = {
    "logout": ["/_matrix/client/v3/logout"],
    "logout_all": ["/_matrix/client/v3/logout/all"],
    "leave": [
        "/_matrix/client/v3/rooms/{roomId}/leave",
        "/_matrix/client/v3/rooms/{roomId}/forget",
    ],
}


def make_world(base: str) -> dict[str, Any]:
    """Users, a room with a message, an alias and a filter: real path parameter values."""
    main = register(base, "fuzzer")
    friend = register(base, "friend")
    token = main["access_token"]
    room = seed_public_room(base, token, SERVER_NAME)
    room_id, alias = room["room_id"], room["alias"]
    call(base, "POST", f"{V3}/rooms/{quote(room_id, safe='')}/join", {}, friend["access_token"])
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
            "eventId": [room["message_id"]],
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


def write_config(path: Path, world: dict[str, Any], token: str) -> None:
    """schemathesis.toml: the Bearer token, spare tokens per operation, ID dictionaries."""
    lines = [f"headers = {{ Authorization = {toml_str('Bearer ' + token)} }}", ""]
    dictionaries = dict(world["dictionaries"], timeout=[0, 1, 25])
    parameters = {f"path.{name}": (name, 0.75) for name in world["dictionaries"]}
    # /sync holds a long-poll for `timeout` ms (up to 10 minutes): keep it short.
    parameters["query.timeout"] = ("timeout", 1.0)
    if "version" in dictionaries:
        # Key backup versions (/room_keys): the world's real one, mostly.
        parameters["query.version"] = ("version", 0.75)
    lines += dictionary_config(dictionaries, parameters)
    for role, paths in SPARE_PATHS.items():
        for p in paths:
            lines += [
                "[[operations]]",
                f"include-path = {toml_str(p)}",
                f"headers = {{ Authorization = {toml_str('Bearer ' + world['spares'][role])} }}",
                "",
            ]
    path.write_text("\n".join(lines))


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
        db_url = create_pg_database(args.database_url)
    proc = start_server(work, port, db_url, SERVER_NAME)
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        world = make_world(base)
        ops = implemented_operations(base, spec, CLIENT_PREFIXES, args.include)
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(filtered_spec(spec, ops, base)))
        config_path = work / "schemathesis.toml"
        write_config(config_path, world, world["token"])
        result, ndjson = run_schemathesis(
            work,
            config_path,
            spec_path,
            base,
            max_examples=args.max_examples,
            workers=args.workers,
            phases=args.phases,
            seed=args.seed,
        )
        output = result.stdout + result.stderr
        server_errors = count_server_errors(ndjson)
        tracebacks = log_errors(work / "atrium.log")
        # The run kept the main session (logouts acted as spares): otherwise
        # most operations would only have seen 401s.
        alive = call(base, "GET", f"{V3}/account/whoami", token=world["token"])[0] == 200
        summary = {
            "operations": len(ops),
            "operations_by_method": by_method(ops),
            "test_cases": count_cases(ndjson),
            "server_errors_5xx": server_errors,
            "schemathesis_exit": result.returncode,
            "schemathesis_summary": summary_line(output),
            "log_errors": len(tracebacks),
            "main_session_alive": alive,
            "seconds": round(time.monotonic() - started, 1),
            "work_dir": str(work) if args.keep else None,
        }
        print(json.dumps(summary, indent=2))
        if server_errors or tracebacks or result.returncode != 0:
            report_failures(output, tracebacks)
            return 1
        return 0
    finally:
        stop_server(proc)
        if db_url:
            drop_pg_database(args.database_url, db_url)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
