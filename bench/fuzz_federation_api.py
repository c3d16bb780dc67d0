"""Fuzz a live `atrium run` with schemathesis against the Matrix server-server OpenAPI spec.

    python bench/fuzz_federation_api.py [--spec PATH] [--max-examples 25] [--workers 1]
                                        [--seed N] [--db sqlite|postgres]
                                        [--database-url postgresql://.../postgres]
                                        [--phases examples,coverage,fuzzing]
                                        [--bad-signature-examples N] [--keep]

What it does:
1. runs a tiny key server for a fuzzing "origin" server, `127.0.0.1:PORT`, on
   loopback over TLS (self-signed): it serves `GET /_matrix/key/v2/server` with
   the origin's freshly made signing key (and accepts the transactions Atrium
   sends the origin: `PUT /send/{txnId}` answers `{"pdus": {}}`; anything else
   is 404 M_UNRECOGNIZED);
2. starts `atrium run` with federation on (as `generate-config --federation-port P
   --federation-skip-verify --federation-allow-private-ips` writes it), server
   name `localhost:P`, SQLite or (`--db postgres`) a throwaway PostgreSQL
   database; Atrium fetches and checks the origin's key the normal way;
3. seeds real state: a local user, a public room with a message and an alias,
   a second (invite-only) room, and the origin's user `@fuzzer:127.0.0.1:PORT`
   joined to the public room through a real signed make_join/send_join, so
   path parameters can be real room, event, user IDs (schemathesis picks them
   from dictionaries most of the time, random values otherwise);
4. asks the federation listener, unsigned, for every operation of the spec:
   those answered 404/405 M_UNRECOGNIZED are not implemented and left out;
5. runs `schemathesis run` (v4) against the TLS federation listener with the
   `not_a_server_error` check, every request signed with X-Matrix by the
   origin (fuzz_federation_hooks.py, after the body is generated);
6. runs it again with a deliberately wrong signature (another key under the
   origin's key ID): no request may get a 5xx, and none to an authenticated
   endpoint may succeed (2xx/3xx);
7. reads the server log: every traceback or ERROR record is a failure.

Exit status 0 only when both runs found no 5xx, the bad signatures got
nothing, and the log has no error. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import ssl
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
import urllib3
from fuzz_common import (
    DEFAULT_POSTGRES,
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
    interactions,
    log_errors,
    register,
    report_failures,
    run_schemathesis,
    seed_public_room,
    start_server,
    stop_server,
    summary_line,
)
from fuzz_federation_hooks import XMatrixAuth

from atrium.crypto.event_hashing import compute_event_id
from atrium.crypto.event_signing import add_hashes_and_signatures
from atrium.crypto.keys import format_signing_key_line, generate_signing_key
from atrium.events.room_versions import KNOWN_ROOM_VERSIONS, get_room_version
from atrium.federation.keys import build_server_keys
from atrium.federation.tls import generate_self_signed_certificate

DEFAULT_SPEC = SPEC_DIR / "server-server-openapi.json"
FEDERATION_PREFIXES = ("/_matrix/federation/", "/_matrix/key/", "/.well-known/")
# Served without an X-Matrix signature: a bad one is simply not looked at.
UNAUTHENTICATED = ("/_matrix/federation/v1/version", "/_matrix/key/", "/.well-known/")
HOOKS_MODULE = "fuzz_federation_hooks"
V3 = "/_matrix/client/v3"
F1 = "/_matrix/federation/v1"
F2 = "/_matrix/federation/v2"

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


def _q(value: str) -> str:
    return quote(value, safe="")


class Origin:
    """The fuzzing origin server: a name, a signing key and a key server on loopback."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.name = f"127.0.0.1:{self.port}"
        self.signing_key = generate_signing_key()
        self.key_line = format_signing_key_line(self.signing_key).strip()
        self.requests_seen: list[str] = []
        cert, key = work / "origin.crt", work / "origin.key"
        generate_self_signed_certificate("127.0.0.1", cert, key)
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, code: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                origin.requests_seen.append(f"{self.command} {self.path}")
                if self.command == "GET" and self.path == "/_matrix/key/v2/server":
                    now = int(time.time() * 1000)
                    self._answer(200, build_server_keys(origin.name, origin.signing_key, now))
                elif self.command == "PUT" and self.path.startswith(f"{F1}/send/"):
                    self._answer(200, {"pdus": {}})
                else:
                    self._answer(404, {"errcode": "M_UNRECOGNIZED", "error": "Not served"})

            do_GET = do_PUT = do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Federation:
    """Requests to Atrium's federation listener signed by the origin."""

    def __init__(self, base: str, origin: Origin, destination: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.verify = False
        self.session.auth = XMatrixAuth(origin.name, destination, origin.signing_key, False)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        response = self.session.request(
            method, self.base + path, json=body, timeout=60, verify=False
        )
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text


def join_origin_user(fed: Federation, origin: Origin, room_id: str, user_id: str) -> dict:
    """make_join + send_join of ``user_id`` (of the origin): the room version,
    the join's event ID, the event IDs of the state and auth chain returned,
    and the auth events an event of ``user_id`` needs (create, power levels,
    its membership)."""
    versions = "&".join(f"ver={v}" for v in KNOWN_ROOM_VERSIONS)
    code, answer = fed.request("GET", f"{F1}/make_join/{_q(room_id)}/{_q(user_id)}?{versions}")
    if code != 200:
        raise RuntimeError(f"make_join: {code} {answer}")
    room_version = get_room_version(answer["room_version"])
    template = answer["event"]
    event = {
        k: template[k]
        for k in ("type", "room_id", "sender", "state_key", "depth", "prev_events", "auth_events")
    }
    event["content"] = dict(template["content"], displayname="Fuzzing origin")
    event["origin_server_ts"] = int(time.time() * 1000)
    add_hashes_and_signatures(room_version, event, origin.name, origin.signing_key)
    join_id = compute_event_id(room_version, event)
    code, answer = fed.request("PUT", f"{F2}/send_join/{_q(room_id)}/{_q(join_id)}", event)
    if code != 200:
        raise RuntimeError(f"send_join: {code} {answer}")
    ids = {join_id}
    auth = [join_id]
    for pdu in answer.get("state", []):
        pdu_id = compute_event_id(room_version, pdu)
        ids.add(pdu_id)
        if (pdu["type"], pdu.get("state_key")) in (
            ("m.room.create", ""),
            ("m.room.power_levels", ""),
        ):
            auth.append(pdu_id)
    ids.update(compute_event_id(room_version, pdu) for pdu in answer.get("auth_chain", []))
    return {
        "room_version": room_version.identifier,
        "join_id": join_id,
        "event_ids": sorted(ids),
        "auth_event_ids": auth,
        "depth": event["depth"],
    }


def make_world(client_base: str, fed: Federation, origin: Origin, server_name: str) -> dict:
    """A local user, rooms, a message, an alias, the origin's user joined:
    real values for path and query parameters."""
    alice = register(client_base, "alice")
    token = alice["access_token"]
    room = seed_public_room(client_base, token, server_name)
    room_id, alias = room["room_id"], room["alias"]
    code, private = call(client_base, "POST", f"{V3}/createRoom", {"preset": "private_chat"}, token)
    assert code == 200, private
    origin_user = f"@fuzzer:{origin.name}"
    joined = join_origin_user(fed, origin, room_id, origin_user)
    event_ids = joined["event_ids"] + [room["message_id"]]
    users = [alice["user_id"], origin_user]
    return {
        "room_id": room_id,
        "local_user": alice["user_id"],
        "message_id": room["message_id"],
        "origin_user": origin_user,
        "joined": joined,
        "dictionaries": {
            "roomId": [room_id, private["room_id"]],
            "eventId": sorted(set(event_ids)),
            "userId": users,
            "serverName": [server_name, origin.name],
            "queryType": ["profile", "directory"],
            "txnId": ["fuzz-txn-1", "fuzz-txn-2"],
            "user_id": users,
            "room_alias": [alias],
            "field": ["displayname", "avatar_url"],
            "limit": [1, 10, 100],
        },
    }


PARAMETERS = {
    "path.roomId": ("roomId", 0.75),
    "path.eventId": ("eventId", 0.75),
    "path.userId": ("userId", 0.75),
    "path.serverName": ("serverName", 0.5),
    "path.queryType": ("queryType", 0.5),
    "path.txnId": ("txnId", 0.25),
    "query.user_id": ("user_id", 0.75),
    "query.room_alias": ("room_alias", 0.75),
    "query.field": ("field", 0.5),
    "query.event_id": ("eventId", 0.75),
    "query.limit": ("limit", 0.5),
}


def write_config(path: Path, world: dict[str, Any]) -> None:
    lines = ["tls-verify = false", ""] + dictionary_config(world["dictionaries"], PARAMETERS)
    path.write_text("\n".join(lines))


def _authenticated(url: str) -> bool:
    path = "/" + url.split("://", 1)[-1].split("/", 1)[-1]
    return not path.startswith(UNAUTHENTICATED)


def bad_signature_outcome(ndjson: Path) -> dict[str, Any]:
    """Statuses of the bad-signature run's requests to authenticated endpoints."""
    statuses: dict[str, int] = {}
    accepted = []
    for request, response in interactions(ndjson):
        url = str(request.get("uri") or request.get("url") or "")
        if not _authenticated(url) or response is None:
            continue
        status = response.get("status_code")
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        # OPTIONS is the CORS pre-flight, answered for any path without acting.
        if isinstance(status, int) and status < 400 and request.get("method") != "OPTIONS":
            accepted.append(f"{request.get('method')} {url} -> {status}")
    return {"statuses": statuses, "accepted": accepted}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=str(DEFAULT_SPEC))
    parser.add_argument("--max-examples", type=int, default=25)
    parser.add_argument(
        "--bad-signature-examples",
        type=int,
        default=None,
        help="max examples per operation of the wrong-signature run (default: --max-examples; 0 skips it)",
    )
    # One worker: more threads trip a CPython 3.11 ast.parse bug inside
    # hypothesis (see docs/client-api.md).
    parser.add_argument("--workers", default="1")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--phases", default="examples,coverage,fuzzing")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--database-url", default=DEFAULT_POSTGRES, help="PostgreSQL server for --db postgres"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data dir and reports")
    args = parser.parse_args()
    bad_examples = (
        args.max_examples if args.bad_signature_examples is None else args.bad_signature_examples
    )

    spec = json.loads(Path(args.spec).read_text())
    work = Path(tempfile.mkdtemp(prefix="atrium-fedfuzz-"))
    origin = Origin(work)
    http_port, fed_port = free_port(), free_port()
    server_name = f"localhost:{fed_port}"
    db_url = create_pg_database(args.database_url) if args.db == "postgres" else None
    flags = [
        "--federation-port",
        str(fed_port),
        "--federation-skip-verify",
        "--federation-allow-private-ips",
    ]
    proc = None
    started = time.monotonic()
    try:
        proc = start_server(work, http_port, db_url, server_name, flags)
        client_base = f"http://127.0.0.1:{http_port}"
        base = f"https://127.0.0.1:{fed_port}"
        fed = Federation(base, origin, server_name)
        world = make_world(client_base, fed, origin, server_name)
        ops = implemented_operations(base, spec, FEDERATION_PREFIXES)
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(filtered_spec(spec, ops, base)))
        config_path = work / "schemathesis.toml"
        write_config(config_path, world)
        env = {
            "SCHEMATHESIS_HOOKS": HOOKS_MODULE,
            "PYTHONPATH": str(Path(__file__).resolve().parent),
            "FUZZ_ORIGIN": origin.name,
            "FUZZ_DESTINATION": server_name,
            "FUZZ_SIGNING_KEY": origin.key_line,
            "FUZZ_ROOM_ID": world["room_id"],
            "FUZZ_ORIGIN_USER": world["origin_user"],
            "FUZZ_LOCAL_USER": world["local_user"],
            "FUZZ_PDU_TEMPLATE": json.dumps(world["joined"]),
        }
        common = {"workers": args.workers, "phases": args.phases, "seed": args.seed}
        result, ndjson = run_schemathesis(
            work,
            config_path,
            spec_path,
            base,
            max_examples=args.max_examples,
            report_name="signed",
            env=dict(env, FUZZ_SIGNATURE="good"),
            **common,
        )
        output = result.stdout + result.stderr
        runs = [result]
        server_errors = count_server_errors(ndjson)
        cases = count_cases(ndjson)
        bad: dict[str, Any] = {"cases": 0, "server_errors_5xx": 0, "accepted": []}
        if bad_examples:
            bad_result, bad_ndjson = run_schemathesis(
                work,
                config_path,
                spec_path,
                base,
                max_examples=bad_examples,
                report_name="bad-signature",
                env=dict(env, FUZZ_SIGNATURE="bad"),
                **common,
            )
            runs.append(bad_result)
            output += bad_result.stdout + bad_result.stderr
            outcome = bad_signature_outcome(bad_ndjson)
            bad = {
                "cases": count_cases(bad_ndjson),
                "server_errors_5xx": count_server_errors(bad_ndjson),
                "statuses": outcome["statuses"],
                "accepted": outcome["accepted"][:20],
                "schemathesis_exit": bad_result.returncode,
            }
        tracebacks = log_errors(work / "atrium.log")
        # The origin's user is still in the room: the signed run had a member
        # server to talk as, all along.
        still_member = fed.request(
            "GET", f"{F1}/state_ids/{_q(world['room_id'])}?event_id={_q(world['message_id'])}"
        )[0]
        summary = {
            "operations": len(ops),
            "operations_by_method": by_method(ops),
            "test_cases": cases,
            "server_errors_5xx": server_errors,
            "schemathesis_exit": result.returncode,
            "schemathesis_summary": summary_line(result.stdout + result.stderr),
            "bad_signature": bad,
            "log_errors": len(tracebacks),
            "origin_key_fetches": origin.requests_seen.count("GET /_matrix/key/v2/server"),
            "origin_state_ids_status": still_member,
            "seconds": round(time.monotonic() - started, 1),
            "work_dir": str(work) if args.keep else None,
        }
        print(json.dumps(summary, indent=2))
        failed = (
            server_errors
            or bad["server_errors_5xx"]
            or bad["accepted"]
            or tracebacks
            or any(r.returncode != 0 for r in runs)
        )
        if failed:
            report_failures(output, tracebacks)
            return 1
        return 0
    finally:
        if proc is not None:
            stop_server(proc)
        origin.close()
        if db_url:
            drop_pg_database(args.database_url, db_url)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
