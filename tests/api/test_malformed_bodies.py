"""Malformed input to every route of a real server (issue 3, "Robustness").

Walks ``hs.router.routes`` of a running server (SQLite and PostgreSQL) and
throws at each route: plausible and hostile path parameters, and for every
method that can carry a body: bytes that are not JSON, an empty body, JSON
that is not an object, ``NaN``, JSON nested 10,000 levels deep, objects whose
top-level values all have the wrong type (per the route's request schema in the
spec's OpenAPI definitions), NUL characters, long incompressible strings, and
a body over the configured size limit; each with a valid access token, with
none, and with an unknown one (server-server routes, present because the
server federates: a well-formed X-Matrix header with a wrong signature, none,
and a Bearer token).

Every answer must be below 500 and, from 400 up, a Matrix error
(``{"errcode": str, "error": str}``; a user-interactive-auth 401 carries
``flows`` instead). Afterwards the server must still work (send + incremental
/sync), the target room's state and the events stored before must be
unchanged, and no request may have logged a traceback.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from tests.conftest import POSTGRES_URL
from tests.federation.support import federating_server
from tests.support.bytes_producer import BytesProducer
from tests.support.client import JsonClient, q

V3 = "/_matrix/client/v3"
# Small enough that an over-limit body is cheap to send to every route,
# large enough for any legitimate event (65,536 bytes).
MAX_REQUEST_SIZE = 100_000
CLIENT_PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0", "/_matrix/client/unstable")

# Top-level request-body keys of each route, from the client-server API OpenAPI
# definitions (s string, o object, a array, i integer, n number, b boolean).
# Routes whose body is free-form event content or account data get FREE_FORM.
SPEC_BODY_KEYS: dict[str, str] = {
    "POST /register": "auth:o device_id:s inhibit_login:b initial_device_display_name:s "
    "password:s refresh_token:b username:s",
    "POST /login": "address:s device_id:s identifier:o initial_device_display_name:s medium:s "
    "password:s refresh_token:b token:s type:s user:s",
    "POST /account/password": "auth:o logout_devices:b new_password:s",
    "PUT /devices/{}": "display_name:s",
    "DELETE /devices/{}": "auth:o",
    "POST /delete_devices": "auth:o devices:a",
    "POST /createRoom": "creation_content:o initial_state:a invite:a invite_3pid:a is_direct:b "
    "name:s power_level_content_override:o preset:s room_alias_name:s room_version:s "
    "topic:s visibility:s",
    "POST /join/{}": "reason:s third_party_signed:o",
    "POST /rooms/{}/join": "reason:s third_party_signed:o",
    "POST /knock/{}": "reason:s",
    "POST /rooms/{}/invite": "reason:s user_id:s",
    "POST /rooms/{}/leave": "reason:s",
    "POST /rooms/{}/kick": "reason:s user_id:s",
    "POST /rooms/{}/ban": "reason:s user_id:s",
    "POST /rooms/{}/unban": "reason:s user_id:s",
    "PUT /rooms/{}/redact/{}/{}": "reason:s",
    "POST /keys/upload": "device_keys:o fallback_keys:o one_time_keys:o",
    "POST /keys/query": "device_keys:o timeout:i",
    "POST /keys/claim": "one_time_keys:o timeout:i",
    "POST /keys/device_signing/upload": "auth:o master_key:o self_signing_key:o user_signing_key:o",
    "PUT /sendToDevice/{}/{}": "messages:o",
    "POST /user/{}/filter": "event_fields:a event_format:s presence:o account_data:o room:o",
    "PUT /directory/room/{}": "room_id:s",
    "PUT /directory/list/room/{}": "visibility:s",
    "POST /publicRooms": "filter:o include_all_networks:b limit:i since:s "
    "third_party_instance_id:s",
    "PUT /rooms/{}/typing/{}": "timeout:i typing:b",
    "POST /rooms/{}/receipt/{}/{}": "thread_id:s",
    "POST /rooms/{}/read_markers": "m.fully_read:s m.read:s m.read.private:s",
    "PUT /user/{}/rooms/{}/tags/{}": "order:n",
    "PUT /pushrules/{}/{}/{}": "actions:a conditions:a pattern:s",
    "PUT /pushrules/{}/{}/{}/actions": "actions:a",
    "PUT /pushrules/{}/{}/{}/enabled": "enabled:b",
    "PUT /presence/{}/status": "presence:s status_msg:s",
    "PUT /profile/{}/{}": "displayname:s avatar_url:s",
    "POST /room_keys/version": "algorithm:s auth_data:o",
    "PUT /room_keys/version/{}": "algorithm:s auth_data:o version:s",
    "PUT /room_keys/keys": "rooms:o",
    "PUT /room_keys/keys/{}": "sessions:o",
    "PUT /room_keys/keys/{}/{}": "first_message_index:i forwarded_count:i is_verified:b "
    "session_data:o",
    "POST /pushers/set": "app_display_name:s app_id:s append:b data:o device_display_name:s "
    "kind:s lang:s profile_tag:s pushkey:s",
}
# Keys that free-form bodies (event content, account data) are read for.
FREE_FORM = (
    "body:s msgtype:s membership:s reason:s redacts:s name:s topic:s displayname:s "
    "avatar_url:s join_rule:s users:o events:o ban:i url:s m.relates_to:o"
)

HUGE = 2**70
# Long and incompressible: PostgreSQL compresses what it indexes, so only
# text like this reaches the btree entry size limit (about 2.7 kB).
NOISE = base64.urlsafe_b64encode(random.Random(7).randbytes(3300)).decode()
DEEP_OK = 400  # deep, but within what Python's JSON parser accepts


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


WRONG_FOR: dict[str, list[Any]] = {
    "s": [{"not": "a string"}, HUGE, 1.5, ["x"], True],
    "o": ["not an object", HUGE, 1.5, [{}], False],
    "a": ["not an array", {"x": 1}, HUGE, [None, 1.5, {}, HUGE]],
    "i": ["1", HUGE, -HUGE, 1.5, {}, True],
    "n": ["1", HUGE, {}, True],
    "b": ["true", 1, {}],
}


def _keys_for(route_key: str) -> dict[str, str]:
    spec = SPEC_BODY_KEYS.get(route_key, FREE_FORM)
    return dict(item.rsplit(":", 1) for item in spec.split())


def object_bodies(route_key: str) -> list[Any]:
    """Objects whose top-level values all (or one by one) have the wrong type."""
    keys = _keys_for(route_key)
    bodies: list[Any] = [
        {k: WRONG_FOR[t][0] for k, t in keys.items()},  # strings <-> objects swapped
        {k: None for k in keys},
        {k: HUGE for k in keys},
        {k: -1.5e300 for k in keys},
        {k: _nested(DEEP_OK) for k in keys},
        {k: "\u202e\U0001f600" * 300 for k in keys},
        {k: NOISE for k in keys},
    ]
    for key, kind in keys.items():
        for wrong in WRONG_FOR[kind][1:]:
            bodies.append({key: wrong})
        if kind == "s":
            bodies.extend([{key: NOISE}, {key: "a\x00b"}])
    return bodies


# (label, raw bytes or None for no body) sent to every route that takes a body.
RAW_BODIES: list[tuple[str, bytes | None]] = [
    ("not-json", b"\x00\xffnot json{"),
    ("empty", b""),
    ("array", b"[1, 2, 3]"),
    ("string", b'"just a string"'),
    ("number", b"12345"),
    ("nan", b'{"a": NaN}'),
    ("infinity", b'{"a": 1e400}'),
    ("lone-surrogate", b'{"body": "\\ud800", "\\udfff": 1}'),
    ("nul", b'{"body": "a\\u0000b", "msgtype": "m.text", "a\\u0000": {"\\u0000": "\\u0000"}}'),
    ("deep-but-parseable", b'{"a":' * 900 + b"1" + b"}" * 900),
    ("deep-array", b"[" * 10_000 + b"]" * 10_000),
    ("deep-object", b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
    ("too-large", b'{"a": "' + b"x" * (MAX_REQUEST_SIZE + 10) + b'"}'),
]

HOSTILE_VALUES = [
    "x" * 5000,
    NOISE,
    "\u00fc\u202e\U0001f600" * 400,
    "a/b",  # sent as a%2Fb
    "%2F..%2F",  # sent double-encoded
    "..",
    "\ufeff@\u0000:",  # the server refuses NUL up front
    "!:",
    "$",
]

TOKENS: list[tuple[str, str | None]] = [("valid", "VALID"), ("none", None), ("bad", "not-a-token")]
SERVER_PREFIXES = ("/_matrix/federation/", "/_matrix/key/")


@dataclass
class Probe:
    method: str
    route: str  # the template it was filled from
    path: str
    body: bytes | None
    auth: str | None  # the whole Authorization header
    label: str


@dataclass
class World:
    """The users and rooms the probes point at."""

    owner: JsonClient
    fuzzer: JsonClient
    spares: dict[str, JsonClient]  # route name -> the user it acts as instead of the fuzzer
    room_id: str  # the room whose state must not change
    side_room_id: str  # where the fuzzer's own membership may come and go
    event_id: str  # an event of the owner's in room_id
    filter_id: str
    server_name: str
    x_matrix: str  # an Authorization header for server-server routes
    extra: dict[str, str] = field(default_factory=dict)


def plausible_params(world: World, route_name: str, counter: Callable[[], int]) -> dict[str, str]:
    fuzzer = world.spares.get(route_name, world.fuzzer)
    # Membership changes of the fuzzer itself are legitimate with an empty
    # body: they go to a side room so room_id's state stays comparable.
    room = (
        world.side_room_id
        if route_name in ("join", "join_by_id", "knock", "room_leave", "forget")
        else world.room_id
    )
    return {
        "room_id": room,
        "room_id_or_alias": room,
        "user_id": fuzzer.user_id or "",
        "event_id": world.event_id,
        "device_id": fuzzer.device_id or "",
        "txn_id": f"txn{counter()}",
        "event_type": "m.room.message" if route_name == "send_message" else "m.room.topic",
        "state_key": "",
        "version": "1",
        "session_id": "fuzzsession",
        "protocol": "irc",
        "receipt_type": "m.read",
        "data_type": "org.example.fuzz",
        "tag": "u.work",
        "scope": "global",
        "kind": "override",
        "rule_id": "fuzz_rule",
        "field": "displayname",
        "filter_id": world.filter_id,
        "room_alias": f"#fuzz-alias:{world.server_name}",
        "stream": "events",
        # server-server API spelling
        "roomId": room,
        "eventId": world.event_id,
        "userId": fuzzer.user_id or "",
        "txnId": f"txn{counter()}",
        "serverName": world.server_name,
    }


def _fill(template: str, params: dict[str, str]) -> str:
    out = template
    for name, value in params.items():
        out = out.replace("{" + name + "}", q(value))
    assert "{" not in out, f"no value for a parameter of {template}"
    return out


def _suffix(template: str) -> str:
    for prefix in CLIENT_PREFIXES:
        if template.startswith(prefix):
            return template[len(prefix) :]
    return template


def _route_key(method: str, template: str) -> str:
    return f"{method} " + re.sub(r"\{\w+\}", "{}", _suffix(template))


def build_probes(routes: list[Any], world: World) -> list[Probe]:
    n = [0]

    def counter() -> int:
        n[0] += 1
        return n[0]

    probes: list[Probe] = []
    seen: set[tuple[str, str, str]] = set()
    for route in routes:
        takes_body = route.method in ("PUT", "POST", "DELETE")
        # The same servlet under r0/unstable: one quick check per route; the
        # full treatment once, under the first prefix registered.
        key = (route.method, _suffix(route.template), route.name)
        full = key not in seen
        seen.add(key)
        rkey = _route_key(route.method, route.template)
        objects = [json.dumps(b).encode() for b in object_bodies(rkey)] if takes_body else []
        bodies: list[tuple[str, bytes | None]]
        if takes_body:
            bodies = RAW_BODIES + [(f"object{i}", b) for i, b in enumerate(objects)]
        else:
            bodies = [("no-body", None)]

        def tokens_for(
            name: str = route.name, template: str = route.template
        ) -> list[tuple[str, str | None]]:
            if template.startswith(SERVER_PREFIXES):
                # Server-server routes: a well-formed X-Matrix header whose
                # signature is wrong makes the server read the body first.
                return [("x-matrix", world.x_matrix), ("none", None), ("bearer", "Bearer x")]
            user = world.spares.get(name, world.fuzzer)
            return [
                (label, f"Bearer {user.access_token if t == 'VALID' else t}" if t else None)
                for label, t in TOKENS
            ]

        params = plausible_params(world, route.name, counter)
        if not full:
            path = _fill(route.template, params)
            for label, body in bodies[:1] + bodies[-1:]:
                probes.append(
                    Probe(route.method, route.template, path, body, tokens_for()[0][1], label)
                )
            continue
        for tlabel, token in tokens_for():
            # An unknown token is refused as early as a missing one: a sample will do.
            sample = tlabel in ("bad", "bearer")
            for blabel, body in bodies[:3] + bodies[-1:] if sample else bodies:
                params["txn_id"] = f"txn{counter()}"
                path = _fill(route.template, params)
                probes.append(
                    Probe(route.method, route.template, path, body, token, f"{tlabel}/{blabel}")
                )
        # Hostile values, one parameter at a time.
        names = [p for p in params if "{" + p + "}" in route.template]
        hostile_bodies = [("empty", b"")] + [(f"object{i}", b) for i, b in enumerate(objects[:2])]
        if not takes_body:
            hostile_bodies = [("no-body", None)]
        for name in names:
            for value in HOSTILE_VALUES:
                p = dict(params, **{name: value})
                p["txn_id"] = value if name == "txn_id" else f"txn{counter()}"
                path = _fill(route.template, p)
                for blabel, body in hostile_bodies:
                    probes.append(
                        Probe(
                            route.method,
                            route.template,
                            path,
                            body,
                            tokens_for()[0][1],
                            f"hostile {name}/{blabel}",
                        )
                    )
                probes.append(
                    Probe(
                        route.method, route.template, path, None, None, f"hostile {name}/no-token"
                    )
                )
    return probes


def check_answer(probe: Probe, code: int, raw: bytes) -> str | None:
    """Why the answer breaks the contract, or None."""
    where = f"{probe.method} {probe.path[:120]} [{probe.label}] -> {code}"
    if code >= 500:
        return f"{where}: {raw[:300]!r}"
    if code < 400:
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return f"{where}: error body is not JSON: {raw[:200]!r}"
    if code == 401 and isinstance(body, dict) and "flows" in body:
        return None  # user-interactive auth: the flows, not an error
    if not (
        isinstance(body, dict)
        and isinstance(body.get("errcode"), str)
        and isinstance(body.get("error"), str)
    ):
        return f"{where}: not a Matrix error: {raw[:200]!r}"
    if "Traceback" in body["error"]:
        return f"{where}: traceback sent to the client"
    return None


async def send_probes(base_url: str, probes: list[Probe], concurrency: int = 24) -> list[str]:
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = concurrency
    agent = Agent(reactor, pool=pool)
    problems: list[str] = []
    sem = defer.DeferredSemaphore(concurrency)

    async def one(probe: Probe) -> None:
        headers = Headers({"Content-Type": ["application/json"]})
        if probe.auth:
            headers.setRawHeaders("Authorization", [probe.auth])
        producer = BytesProducer(probe.body) if probe.body is not None else None
        url = (base_url + probe.path).encode("ascii")
        try:
            resp = await agent.request(probe.method.encode(), url, headers, producer)
            raw = await readBody(resp)
        except Exception as e:
            problems.append(
                f"{probe.method} {probe.path[:120]} ({len(url)} bytes) [{probe.label}]: {e!r}"
            )
            return
        problem = check_answer(probe, resp.code, raw)
        if problem:
            problems.append(problem)

    try:
        await defer.gatherResults(
            [sem.run(lambda p=p: defer.ensureDeferred(one(p))) for p in probes],
            consumeErrors=True,
        )
    finally:
        await pool.closeCachedConnections()
    return problems


class _TracebackCatcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


async def _state(client: JsonClient, room_id: str) -> list[tuple[str, str, str, str]]:
    resp = await client.get(f"{V3}/rooms/{q(room_id)}/state")
    assert resp.code == 200, resp
    return sorted(
        (e["type"], e["state_key"], e["event_id"], json.dumps(e["content"], sort_keys=True))
        for e in resp.json
    )


async def _event(client: JsonClient, room_id: str, event_id: str) -> dict[str, Any]:
    resp = await client.get(f"{V3}/rooms/{q(room_id)}/event/{q(event_id)}")
    assert resp.code == 200, resp
    resp.json.pop("unsigned", None)
    return resp.json


async def _set_up(hs: Any, anon: JsonClient) -> World:
    owner = await anon.register("owner")
    fuzzer = await anon.register("fuzzer")
    room = await owner.post(f"{V3}/createRoom", {"preset": "public_chat", "name": "Keep"})
    room_id = room.json["room_id"]
    assert (await fuzzer.post(f"{V3}/rooms/{q(room_id)}/join")).code == 200
    sent = await owner.put(
        f"{V3}/rooms/{q(room_id)}/send/m.room.message/keep1", {"msgtype": "m.text", "body": "keep"}
    )
    side = await owner.post(f"{V3}/createRoom", {"preset": "public_chat"})
    side_room_id = side.json["room_id"]
    assert (await fuzzer.post(f"{V3}/rooms/{q(side_room_id)}/join")).code == 200
    made = await fuzzer.post(f"{V3}/user/{q(fuzzer.user_id or '')}/filter", {"room": {}})
    assert made.code == 200, made
    # Requests that are legitimate with any body (or none) and have lasting
    # effects act as users of their own: logging out ends the session;
    # clearing a profile field (``{"displayname": null}`` clears it) re-sends
    # the user's member events, which would change room_id's state.
    spares = {
        "logout": await anon.register("spare1"),
        "logout_all": await anon.register("spare2"),
    }
    spares["put_field"] = spares["delete_field"] = await anon.register("spare3")
    return World(
        owner,
        fuzzer,
        spares,
        room_id,
        side_room_id,
        sent.json["event_id"],
        made.json["filter_id"],
        hs.server_name,
        f'X-Matrix origin="{hs.server_name}",destination="{hs.server_name}",'
        'key="ed25519:fuzz",sig="bm90IGEgc2lnbmF0dXJl"',
    )


@pytest_twisted.async_yield_fixture
async def small_limit_server(db_kind: str, tmp_path):
    """A server as the `server` fixture makes it (both engines, registration
    open, rate limits off) with federation on, so the server-server routes are
    registered too, and a 100 kB request limit."""
    async with federating_server(
        tmp_path,
        "fuzz",
        db_kind,
        POSTGRES_URL,
        overrides={"max_request_size": MAX_REQUEST_SIZE},
    ) as fed:
        yield fed.hs, fed.anon


@pytest_twisted.ensureDeferred
async def test_every_route_answers_malformed_input_with_a_matrix_error(small_limit_server):
    """No 5xx and no non-Matrix error body for any bad input on any route; the
    server keeps working and nothing stored before changes."""
    hs, anon = small_limit_server
    world = await _set_up(hs, anon)
    state_before = await _state(world.owner, world.room_id)
    event_before = await _event(world.owner, world.room_id, world.event_id)
    since = (await world.fuzzer.get(f"{V3}/sync", query={"timeout": "0"})).json["next_batch"]

    catcher = _TracebackCatcher()
    logging.getLogger().addHandler(catcher)
    try:
        probes = build_probes(list(hs.router.routes), world)
        started = time.monotonic()
        problems = await send_probes(anon.base_url, probes)
        elapsed = time.monotonic() - started
    finally:
        logging.getLogger().removeHandler(catcher)

    assert not problems, f"{len(problems)} bad answers of {len(probes)}:\n" + "\n".join(
        sorted(problems)[:40]
    )
    tracebacks = [f"{r.getMessage()} ({r.exc_info[1]!r})" for r in catcher.records if r.exc_info]
    assert not tracebacks, "server logged tracebacks:\n" + "\n".join(tracebacks[:20])
    # The walk is complete: every registered route got probes, the
    # server-server ones included.
    assert any(r.template.startswith(SERVER_PREFIXES) for r in hs.router.routes)
    probed = {(p.method, p.route) for p in probes}
    assert probed == {(r.method, r.template) for r in hs.router.routes}, elapsed

    # Still works: the fuzzer's session, a send, and an incremental sync that sees it.
    assert (await world.fuzzer.get(f"{V3}/account/whoami")).code == 200
    sent = await world.owner.put(
        f"{V3}/rooms/{q(world.room_id)}/send/m.room.message/after",
        {"msgtype": "m.text", "body": "still here"},
    )
    assert sent.code == 200, sent
    synced = await world.fuzzer.get(f"{V3}/sync", query={"since": since, "timeout": "5000"})
    assert synced.code == 200, synced
    timeline = synced.json["rooms"]["join"][world.room_id]["timeline"]["events"]
    assert sent.json["event_id"] in [e["event_id"] for e in timeline]
    # Nothing stored before was changed.
    assert await _state(world.owner, world.room_id) == state_before
    assert await _event(world.owner, world.room_id, world.event_id) == event_before


def test_object_bodies_put_wrong_types_in_every_key():
    """The generator really produces wrong types for each key of a route's schema."""
    bodies = object_bodies("PUT /rooms/{}/typing/{}")
    swapped = bodies[0]
    assert swapped == {"timeout": "1", "typing": "true"}
    assert {"typing": 1} in bodies and {"timeout": HUGE} in bodies
    assert all(set(b) <= {"timeout", "typing"} for b in bodies)
