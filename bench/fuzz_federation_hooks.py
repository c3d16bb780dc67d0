"""schemathesis hooks for fuzz_federation_api.py: X-Matrix signing of every request.

Loaded by schemathesis through ``SCHEMATHESIS_HOOKS=fuzz_federation_hooks``
(with this directory on PYTHONPATH). The origin server, its signing key and
the destination come from the environment:

- ``FUZZ_ORIGIN``: the origin server name (``127.0.0.1:PORT``, whose key
  server the fuzzer runs);
- ``FUZZ_DESTINATION``: Atrium's server name;
- ``FUZZ_SIGNING_KEY``: the origin's key, one line of a signing key file
  (``ed25519 <version> <seed>``);
- ``FUZZ_SIGNATURE``: ``good`` (default) or ``bad`` (signed with another key
  under the same key ID: every authenticated endpoint must refuse it);
- ``FUZZ_ROOM_ID``, ``FUZZ_ORIGIN_USER``: the seeded room the origin's user
  is joined to; ``FUZZ_PDU_TEMPLATE``: JSON with that room's version, the
  join's event ID and depth, and the auth events of the origin user's events.

Before signing, generated bodies are steered towards what Atrium would act on,
half of the time: a transaction's ``origin`` is the signing server, and PDUs
(in /send, /invite, /send_join, /send_leave) are about the seeded room and sent
by the origin's user. Otherwise almost every generated transaction stops at
"origin does not match the signing server" and no PDU gets past its room.
Half of the steered PDUs in /send are then completed (generated type, content
and state_key kept; prev_events the origin's join, real auth events), hashed
and signed by the origin, so they pass the signature checks and reach event
authorisation, state resolution and persistence. The origin's own membership
is never changed that way, so it stays in the room for the whole run.
EDUs get the same treatment: half of them become one of the EDU types Atrium
handles, about the origin's user and the seeded room, with each field either
taken from the generated content or an awkward value (negative, above 2**63,
empty, NUL characters, wrong type).

Signing happens as a `requests` auth callable, on the prepared request: the
body and the query string are final there (schemathesis serialises them after
the hooks run), and the server-server API signs the request target exactly as
sent. The signature is computed with signedjson directly, not with Atrium's
own request-signing code, so a fault there cannot cancel itself out.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import requests
import schemathesis
import signedjson.key
import signedjson.sign


def _load_key(line: str) -> Any:
    algorithm, version, seed = line.split()
    return signedjson.key.decode_signing_key_base64(algorithm, version, seed)


class XMatrixAuth(requests.auth.AuthBase):
    """Server-server API "Request Authentication": signs {method, uri, origin,
    destination[, content]} and sets the Authorization header."""

    def __init__(self, origin: str, destination: str, key: Any, bad: bool) -> None:
        self.origin = origin
        self.destination = destination
        self.key = key
        self.signer = key
        if bad:
            # Same algorithm and version, different secret: the header names a
            # key the server can fetch, but the signature does not verify.
            self.signer = signedjson.key.generate_signing_key(key.version)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        signed: dict[str, Any] = {
            "method": request.method,
            "uri": request.path_url,
            "origin": self.origin,
            "destination": self.destination,
        }
        body = request.body
        if body:
            try:
                content = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                content = None  # not JSON: refused before signatures are looked at
            # As every server does it: a JSON `null` body is no content.
            if content is not None:
                signed["content"] = content
        try:
            signedjson.sign.sign_json(signed, self.origin, self.signer)
        except UnicodeError:
            # A lone surrogate (\ud800) has no UTF-8 form, so no canonical
            # JSON: sign without the content; the server must refuse it, not fail.
            signed.pop("content")
            signedjson.sign.sign_json(signed, self.origin, self.signer)
        key_id = f"{self.key.alg}:{self.key.version}"
        sig = signed["signatures"][self.origin][key_id]
        request.headers["Authorization"] = (
            f'X-Matrix origin="{self.origin}",destination="{self.destination}",'
            f'key="{key_id}",sig="{sig}"'
        )
        return request


_AUTH: XMatrixAuth | None = None
_RANDOM = random.Random(0)
_PDU_PATHS = ("/send_join/", "/send_leave/", "/invite/")


def _steer_pdu(pdu: Any) -> bool:
    if not isinstance(pdu, dict) or _RANDOM.random() < 0.5:
        return False
    pdu["room_id"] = os.environ.get("FUZZ_ROOM_ID", pdu.get("room_id"))
    pdu["sender"] = os.environ.get("FUZZ_ORIGIN_USER", pdu.get("sender"))
    return True


def _signed_pdu(pdu: dict[str, Any]) -> dict[str, Any]:
    """``pdu`` made into an event of the origin's user in the seeded room,
    hashed and signed by the origin."""
    from atrium.crypto.event_signing import add_hashes_and_signatures
    from atrium.events.room_versions import get_room_version

    template = json.loads(os.environ["FUZZ_PDU_TEMPLATE"])
    room_version = get_room_version(template["room_version"])
    user = os.environ["FUZZ_ORIGIN_USER"]
    event: dict[str, Any] = {
        "type": pdu["type"] if isinstance(pdu.get("type"), str) else "m.room.message",
        "content": pdu["content"] if isinstance(pdu.get("content"), dict) else {},
        "room_id": os.environ["FUZZ_ROOM_ID"],
        "sender": user,
        "origin_server_ts": pdu.get("origin_server_ts", 0),
        "depth": template["depth"] + 1,
        "prev_events": [template["join_id"]],
        "auth_events": list(template["auth_event_ids"]),
    }
    if "state_key" in pdu:
        event["state_key"] = pdu["state_key"]
    if event["type"] == "m.room.member" and event.get("state_key") == user:
        event["type"] = "org.example.fuzz.member"
    if not isinstance(event["origin_server_ts"], int):
        event["origin_server_ts"] = 0
    try:
        add_hashes_and_signatures(
            room_version, event, os.environ["FUZZ_ORIGIN"], _AUTH.key if _AUTH else None
        )
    except Exception:
        return pdu  # not canonical JSON (floats, huge ints...): sent as generated
    return event


_AWKWARD: list[Any] = [
    0,
    -1,
    2**63,
    10**30,
    1.5,
    True,
    None,
    "",
    "\u0000",
    "x\u0000y",
    [],
    {},
    "é" * 300,
]


def _value(generated: dict[str, Any], key: str, default: Any) -> Any:
    """A field of a steered EDU: generated, awkward, or a plausible default."""
    roll = _RANDOM.random()
    if roll < 0.3 and key in generated:
        return generated[key]
    if roll < 0.6:
        return _RANDOM.choice(_AWKWARD)
    return default


def _steered_edu(edu: dict[str, Any]) -> dict[str, Any]:
    user, room = os.environ["FUZZ_ORIGIN_USER"], os.environ["FUZZ_ROOM_ID"]
    template = json.loads(os.environ["FUZZ_PDU_TEMPLATE"])
    gen = edu.get("content") if isinstance(edu.get("content"), dict) else {}
    kind = _RANDOM.choice(
        [
            "m.typing",
            "m.receipt",
            "m.presence",
            "m.direct_to_device",
            "m.device_list_update",
            "m.signing_key_update",
        ]
    )
    if kind == "m.typing":
        content: Any = {"user_id": user, "room_id": room, "typing": _value(gen, "typing", True)}
    elif kind == "m.receipt":
        receipt = {
            "event_ids": [_value(gen, "event_id", template["join_id"])],
            "data": {"ts": _value(gen, "ts", 1), "thread_id": _value(gen, "thread_id", "main")},
        }
        content = {room: {"m.read": {user: receipt}}}
    elif kind == "m.presence":
        update = {
            "user_id": user,
            "presence": _RANDOM.choice(["online", "offline", "unavailable"]),
            "status_msg": _value(gen, "status_msg", "fuzzing"),
            "last_active_ago": _value(gen, "last_active_ago", 5),
            "currently_active": _value(gen, "currently_active", True),
        }
        content = {"push": [update]}
    elif kind == "m.direct_to_device":
        content = {
            "sender": user,
            "type": _value(gen, "type", "org.example.fuzz"),
            "message_id": _value(gen, "message_id", "m1"),
            "messages": _value(
                gen, "messages", {os.environ.get("FUZZ_LOCAL_USER", ""): {"*": gen}}
            ),
        }
    elif kind == "m.device_list_update":
        content = {
            "user_id": user,
            "device_id": _value(gen, "device_id", "FUZZDEVICE"),
            "stream_id": _value(gen, "stream_id", 1),
            "prev_id": _value(gen, "prev_id", []),
            "deleted": _value(gen, "deleted", False),
            "keys": _value(gen, "keys", {}),
        }
    else:
        content = {"user_id": user, "master_key": _value(gen, "master_key", {})}
    return {"edu_type": kind, "content": content}


def steer(case: Any) -> None:
    """Point some generated bodies at the seeded room and the origin (see above)."""
    body = getattr(case, "body", None)
    if not isinstance(body, dict):
        return
    path = case.operation.path
    if path.endswith("/send/{txnId}"):
        if _RANDOM.random() < 0.5:
            body["origin"] = os.environ["FUZZ_ORIGIN"]
        pdus = body.get("pdus")
        if isinstance(pdus, list):
            for i, pdu in enumerate(pdus):
                if _steer_pdu(pdu) and _RANDOM.random() < 0.5:
                    pdus[i] = _signed_pdu(pdu)
        edus = body.get("edus")
        if isinstance(edus, list):
            for i, edu in enumerate(edus):
                if isinstance(edu, dict) and _RANDOM.random() < 0.5:
                    edus[i] = _steered_edu(edu)
            # Generated transactions mostly carry no EDUs at all.
            if _RANDOM.random() < 0.5:
                edus.extend(_steered_edu({}) for _ in range(_RANDOM.randint(1, 3)))
    elif any(p in path for p in _PDU_PATHS):
        # v2 invite wraps the event in {"event": ...}; send_join/leave send it bare.
        _steer_pdu(body.get("event") if "/invite/" in path else body)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    global _AUTH
    if _AUTH is None:
        _AUTH = XMatrixAuth(
            os.environ["FUZZ_ORIGIN"],
            os.environ["FUZZ_DESTINATION"],
            _load_key(os.environ["FUZZ_SIGNING_KEY"]),
            os.environ.get("FUZZ_SIGNATURE", "good") == "bad",
        )
    kwargs["auth"] = _AUTH
    steer(case)
