"""Keys of other servers' users for the client /keys/query and /keys/claim.

Client-server API "Key management API": a query or claim naming users of
other homeservers is forwarded to each of those servers with the
server-server ``POST /_matrix/federation/v1/user/keys/query`` and
``/user/keys/claim`` ("End-to-End Encryption" in the server-server API),
all servers at once, each bounded by the request's ``timeout``. A server
that does not answer, or answers with an error, is listed in ``failures``
under its name; the other answers are merged in.

A server speaks for its own users only: whatever an answer says about a
user of another server, a user or device we did not ask about, or a key
object naming another user or device, is dropped. Signatures are passed on
as they are (clients verify device and cross-signing keys themselves).

Users who share a room with one of our users are not asked here: their
device lists are cached (``atrium.handlers.remote_device_lists``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from twisted.internet import defer

from atrium.federation.client import HttpResponseError

logger = logging.getLogger(__name__)

FED_V1 = "/_matrix/federation/v1"
# The client's `timeout` (ms) when it gives none (spec default for both endpoints).
DEFAULT_TIMEOUT_MS = 10_000
MAX_TIMEOUT_MS = 60_000


def timeout_seconds(body: Mapping[str, Any]) -> float:
    """The request's ``timeout`` in seconds, defaulted and bounded."""
    value = body.get("timeout")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        value = DEFAULT_TIMEOUT_MS
    return min(value, MAX_TIMEOUT_MS) / 1000.0


def failure_of(error: BaseException) -> dict[str, Any]:
    """What goes in ``failures`` for a server that did not give a usable answer."""
    if isinstance(error, HttpResponseError):
        return {"status": error.code, "message": str(error)}
    return {"status": 503, "message": str(error) or type(error).__name__}


def _domain(user_id: str) -> str:
    return user_id.split(":", 1)[1]


class RemoteE2eKeys:
    """Forwards key queries and claims to the servers owning the users."""

    def __init__(self, client: Any) -> None:
        # FederationHttpClient
        self.client = client

    async def _fan_out(
        self,
        by_server: Mapping[str, Any],
        ask: Callable[[str, Any], Awaitable[Any]],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``ask(server, part)`` for every server at once: (answers, failures)."""
        answers: dict[str, Any] = {}
        failures: dict[str, Any] = {}

        async def one(server: str, part: Any) -> None:
            try:
                answer = await ask(server, part)
                if not isinstance(answer, dict):
                    raise ValueError("answer is not a JSON object")
                answers[server] = answer
            except Exception as e:
                logger.info("Key request to %s failed: %s", server, e)
                failures[server] = failure_of(e)

        await defer.DeferredList(
            [defer.ensureDeferred(one(s, p)) for s, p in sorted(by_server.items())],
            consumeErrors=True,
        )
        return answers, failures

    # -- /keys/query -----------------------------------------------------------------
    async def query(
        self, wanted: Mapping[str, list[str]], timeout: float
    ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """Keys of remote users: ({"device_keys"|"master_keys"|"self_signing_keys": ...}, failures)."""
        by_server: dict[str, dict[str, list[str]]] = {}
        for user_id, device_ids in wanted.items():
            by_server.setdefault(_domain(user_id), {})[user_id] = list(device_ids)

        async def ask(server: str, part: dict[str, list[str]]) -> Any:
            return await self.client.post_json(
                server, f"{FED_V1}/user/keys/query", {"device_keys": part}, timeout=timeout
            )

        answers, failures = await self._fan_out(by_server, ask)
        merged: dict[str, dict[str, Any]] = {
            "device_keys": {},
            "master_keys": {},
            "self_signing_keys": {},
        }
        for server, answer in answers.items():
            asked = by_server[server]
            devices = answer.get("device_keys")
            devices = devices if isinstance(devices, dict) else {}
            for user_id, device_ids in asked.items():
                by_device = devices.get(user_id)
                if not isinstance(by_device, dict):
                    by_device = {}
                merged["device_keys"][user_id] = {
                    device_id: keys
                    for device_id, keys in by_device.items()
                    if (not device_ids or device_id in device_ids)
                    and isinstance(keys, dict)
                    and keys.get("user_id") == user_id
                    and keys.get("device_id") == device_id
                }
            for kind in ("master_keys", "self_signing_keys"):
                found = answer.get(kind)
                if not isinstance(found, dict):
                    continue
                for user_id in asked:
                    key = found.get(user_id)
                    if isinstance(key, dict) and key.get("user_id") == user_id:
                        merged[kind][user_id] = key
        return merged, failures

    # -- /keys/claim ----------------------------------------------------------------------
    async def claim(
        self, wanted: Mapping[str, Mapping[str, str]], timeout: float
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """One-time keys of remote users' devices: (one_time_keys, failures)."""
        by_server: dict[str, dict[str, dict[str, str]]] = {}
        for user_id, by_device in wanted.items():
            by_server.setdefault(_domain(user_id), {})[user_id] = dict(by_device)

        async def ask(server: str, part: dict[str, dict[str, str]]) -> Any:
            return await self.client.post_json(
                server, f"{FED_V1}/user/keys/claim", {"one_time_keys": part}, timeout=timeout
            )

        answers, failures = await self._fan_out(by_server, ask)
        claimed: dict[str, Any] = {}
        for server, answer in answers.items():
            keys = answer.get("one_time_keys")
            keys = keys if isinstance(keys, dict) else {}
            for user_id, asked_devices in by_server[server].items():
                answered = keys.get(user_id)
                if not isinstance(answered, dict):
                    continue
                kept = {
                    device_id: key_map
                    for device_id, key_map in answered.items()
                    if device_id in asked_devices and isinstance(key_map, dict)
                }
                if kept:
                    claimed[user_id] = kept
        return claimed, failures
