"""HTTP pushers against a real push gateway: a small HTTP server in the test
process stands for /_matrix/push/v1/notify (push gateway API). Both engines."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.api.sync_sections_helper import shared_room
from tests.push.test_notifications import send
from tests.replication.support import wait_until
from tests.support.client import q

V3 = "/_matrix/client/v3"


class Gateway(Resource):
    """Records every notify body; answers the queued status codes first, then 200."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.received: list[dict] = []
        self.statuses: list[int] = []
        self.rejected: list[str] = []

    def render_POST(self, request):  # noqa: N802 (twisted's name)
        assert request.path == b"/_matrix/push/v1/notify"
        body = json.loads(request.content.read())
        code = self.statuses.pop(0) if self.statuses else 200
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"application/json")
        if code != 200:
            return b'{"errcode":"M_UNKNOWN","error":"try later"}'
        self.received.append(body["notification"])
        return json.dumps({"rejected": self.rejected}).encode()


async def with_gateway():
    gateway = Gateway()
    port = reactor.listenTCP(0, Site(gateway), interface="127.0.0.1")
    return gateway, port, f"http://127.0.0.1:{port.getHost().port}/_matrix/push/v1/notify"


async def add_pusher(client, url: str, pushkey: str, **data) -> None:
    resp = await client.post(
        f"{V3}/pushers/set",
        {
            "kind": "http",
            "app_id": "org.example.app",
            "pushkey": pushkey,
            "app_display_name": "App",
            "device_display_name": "Phone",
            "lang": "en",
            "data": {"url": url, **data},
        },
    )
    assert resp.code == 200, resp


@pytest_twisted.ensureDeferred
async def test_gateway_gets_full_and_event_id_only_notifications_with_counts(server):
    hs, anon = server
    gateway, port, url = await with_gateway()
    try:
        alice = await anon.register("alice")
        bob = await anon.register("bob")
        room_id = await shared_room(alice, bob)
        await alice.put(f"{V3}/rooms/{q(room_id)}/state/m.room.name", {"name": "Lounge"})
        await add_pusher(alice, url, "full-key")
        await add_pusher(bob, url, "short-key", format="event_id_only")
        first = await send(bob, room_id, "hello alice")
        second = await send(alice, room_id, "hi bob")
        await send(bob, room_id, "again", **{"m.mentions": {"user_ids": [alice.user_id]}})
        await wait_until(lambda: len(gateway.received) >= 3, what="three pushes")
        by_key = {}
        for note in gateway.received:
            by_key.setdefault(note["devices"][0]["pushkey"], []).append(note)
        full = by_key["full-key"]
        assert [n["event_id"] for n in full[:1]] == [first]
        assert full[0]["room_id"] == room_id and full[0]["type"] == "m.room.message"
        assert full[0]["sender"] == bob.user_id and full[0]["content"]["body"] == "hello alice"
        assert full[0]["room_name"] == "Lounge"
        assert full[0]["counts"] == {"unread": 1}
        assert full[0]["devices"][0]["tweaks"] == {"sound": "default"}
        assert "url" not in full[0]["devices"][0]["data"]
        assert full[1]["counts"] == {"unread": 2}
        assert full[1]["devices"][0]["tweaks"]["highlight"] is True
        (short,) = by_key["short-key"]
        assert short["event_id"] == second and short["counts"] == {"unread": 1}
        assert "content" not in short and "sender" not in short
        assert short["devices"][0]["data"] == {"format": "event_id_only"}
        # The sender is never pushed their own message.
        assert all(n["event_id"] != second for n in full)
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_failing_gateway_is_retried_in_order_and_rejected_pushkey_removes_pusher(server):
    hs, anon = server
    hs.pusher_service.retry_initial_s = 0.05
    gateway, port, url = await with_gateway()
    try:
        alice = await anon.register("carol")
        bob = await anon.register("dave")
        room_id = await shared_room(alice, bob)
        await add_pusher(alice, url, "key")
        gateway.statuses = [500, 503, 429]
        sent = [await send(bob, room_id, f"m{i}") for i in range(3)]
        await wait_until(lambda: len(gateway.received) >= 3, what="pushes after retries")
        assert [n["event_id"] for n in gateway.received] == sent
        assert gateway.statuses == []

        # The gateway says the pushkey is dead: the pusher is deleted.
        gateway.rejected = ["key"]
        await send(bob, room_id, "m3")
        await wait_until(lambda: len(gateway.received) == 4, what="the fourth push")

        async def listed():
            return (await alice.get(f"{V3}/pushers")).json["pushers"]

        for _ in range(50):
            if not await listed():
                break
            from twisted.internet import task

            await task.deferLater(reactor, 0.02, lambda: None)
        assert await listed() == []
        await send(bob, room_id, "m4")
        assert len(gateway.received) == 4
    finally:
        await port.stopListening()
