"""A small JSON-over-HTTP client for in-process API tests (Twisted Agent)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from twisted.internet import reactor
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from tests.support.bytes_producer import BytesProducer


class Response:
    def __init__(self, code: int, raw: bytes, headers: Headers) -> None:
        self.code = code
        self.raw = raw
        self.headers = headers
        try:
            self.json: Any = json.loads(raw) if raw else None
        except ValueError:
            self.json = None

    def __repr__(self) -> str:
        return f"<Response {self.code} {self.raw[:200]!r}>"


class JsonClient:
    def __init__(self, base_url: str, access_token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.access_token = access_token
        self.agent = Agent(reactor)
        self.user_id: str | None = None
        self.device_id: str | None = None

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        query: dict[str, Any] | None = None,
        token: str | None | bool = True,
        headers: dict[str, str] | None = None,
    ) -> Response:
        url = self.base_url + path
        if query:
            url += "?" + urlencode(query, doseq=True)
        hdrs = Headers({"Content-Type": ["application/json"]})
        for k, v in (headers or {}).items():
            hdrs.setRawHeaders(k, [v])
        bearer = self.access_token if token is True else (token or None)
        if bearer:
            hdrs.setRawHeaders("Authorization", [f"Bearer {bearer}"])
        payload = (
            raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        )
        producer = BytesProducer(payload) if payload is not None else None
        resp = await self.agent.request(method.encode(), url.encode(), hdrs, producer)
        data = await readBody(resp)
        return Response(resp.code, data, resp.headers)

    async def get(self, path: str, **kw: Any) -> Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return await self.request("POST", path, body if body is not None else {}, **kw)

    async def put(self, path: str, body: Any = None, **kw: Any) -> Response:
        return await self.request("PUT", path, body if body is not None else {}, **kw)

    async def delete(self, path: str, body: Any = None, **kw: Any) -> Response:
        return await self.request("DELETE", path, body, **kw)

    # -- conveniences -------------------------------------------------------------
    async def register(self, username: str, password: str = "secret-pw") -> JsonClient:
        """Register (dummy UIA) and return a client logged in as the new user."""
        first = await self.post(
            "/_matrix/client/v3/register", {"username": username, "password": password}, token=False
        )
        assert first.code == 401, first
        done = await self.post(
            "/_matrix/client/v3/register",
            {
                "username": username,
                "password": password,
                "auth": {"type": "m.login.dummy", "session": first.json["session"]},
            },
            token=False,
        )
        assert done.code == 200, done
        client = JsonClient(self.base_url, done.json["access_token"])
        client.user_id = done.json["user_id"]
        client.device_id = done.json["device_id"]
        return client


def q(s: str) -> str:
    """Percent-encode a path segment (room IDs, user IDs, event types)."""
    return quote(s, safe="")
