"""Real ed25519 device and cross-signing keys for E2EE API tests, plus /sync section helpers."""

from __future__ import annotations

import copy
from typing import Any

import signedjson.key
from signedjson.sign import sign_json
from signedjson.types import SigningKey

from atrium.crypto.keys import encode_verify_key_base64
from atrium.sync.sections import SyncRequest
from atrium.sync.token import StreamToken
from tests.support.client import JsonClient

V3 = "/_matrix/client/v3"


class TestDevice:
    """A device's ed25519 key and the key objects it uploads, signed by it."""

    __test__ = False  # not a pytest test class

    def __init__(self, user_id: str, device_id: str) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.signing_key = signedjson.key.generate_signing_key(device_id)
        self.ed25519 = encode_verify_key_base64(self.signing_key.verify_key)

    def device_keys(self) -> dict[str, Any]:
        keys = {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                f"curve25519:{self.device_id}": "curve+" + self.ed25519[:20],
                f"ed25519:{self.device_id}": self.ed25519,
            },
        }
        return sign_json(keys, self.user_id, self.signing_key)

    def one_time_keys(self, ids: list[str], fallback: bool = False) -> dict[str, Any]:
        out = {}
        for key_id in ids:
            key: dict[str, Any] = {"key": f"otk-{key_id}-{self.device_id}"}
            if fallback:
                key["fallback"] = True
            out[f"signed_curve25519:{key_id}"] = sign_json(key, self.user_id, self.signing_key)
        return out


def cross_signing_key(user_id: str, usage: str) -> tuple[dict[str, Any], SigningKey]:
    """An unsigned cross-signing key object and its signing key (key ID = public key)."""
    key = signedjson.key.generate_signing_key("tmp")
    public = encode_verify_key_base64(key.verify_key)
    key.version = public
    obj = {"user_id": user_id, "usage": [usage], "keys": {f"ed25519:{public}": public}}
    return obj, key


def signed(obj: dict[str, Any], user_id: str, key: SigningKey) -> dict[str, Any]:
    return sign_json(copy.deepcopy(obj), user_id, key)


async def upload(client: JsonClient, body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post(f"{V3}/keys/upload", body)
    assert resp.code == 200, resp
    return resp.json


async def login(anon: JsonClient, username: str, password: str = "secret-pw") -> JsonClient:
    """A second device of an existing user."""
    resp = await anon.post(
        f"{V3}/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": username},
            "password": password,
        },
        token=False,
    )
    assert resp.code == 200, resp
    client = JsonClient(anon.base_url, resp.json["access_token"])
    client.user_id = resp.json["user_id"]
    client.device_id = resp.json["device_id"]
    return client


async def run_section(
    section: Any, client: JsonClient, since: StreamToken | None, now: StreamToken
) -> tuple[dict[str, Any], SyncRequest]:
    """What one /sync section adds for ``client``'s device between two tokens."""
    request = SyncRequest(client.user_id, client.device_id, since, now, None)
    response: dict[str, Any] = {}
    await section.fill(request, response)
    return response, request


def section_of(hs: Any, cls: type) -> Any:
    (section,) = [s for s in hs.sync_sections if isinstance(s, cls)]
    return section
