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
  under the same key ID: every authenticated endpoint must refuse it).

Signing happens as a `requests` auth callable, on the prepared request: the
body and the query string are final there (schemathesis serialises them after
the hooks run), and the server-server API signs the request target exactly as
sent. The signature is computed with signedjson directly, not with Atrium's
own request-signing code, so a fault there cannot cancel itself out.
"""

from __future__ import annotations

import json
import os
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
                signed["content"] = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                pass  # not JSON: the server refuses it before looking at signatures
        signedjson.sign.sign_json(signed, self.origin, self.signer)
        key_id = f"{self.key.alg}:{self.key.version}"
        sig = signed["signatures"][self.origin][key_id]
        request.headers["Authorization"] = (
            f'X-Matrix origin="{self.origin}",destination="{self.destination}",'
            f'key="{key_id}",sig="{sig}"'
        )
        return request


_AUTH: XMatrixAuth | None = None


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
