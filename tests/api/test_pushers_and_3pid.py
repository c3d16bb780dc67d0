"""Pushers stored for real (GET /pushers, POST /pushers/set), /notifications
refused honestly, and the third-party endpoints of a server without 3PIDs or bridges."""

from __future__ import annotations

import pytest_twisted

from tests.support.e2ee import V3

URL = "https://push.example.org/_matrix/push/v1/notify"


def pusher(pushkey: str = "key1", app_id: str = "im.vector.app.android", **extra) -> dict:
    body = {
        "kind": "http",
        "app_id": app_id,
        "pushkey": pushkey,
        "app_display_name": "Element",
        "device_display_name": "Phone",
        "lang": "en",
        "data": {"url": URL, "format": "event_id_only", "custom": 1},
    }
    body.update(extra)
    return body


async def listed(client) -> list:
    resp = await client.get(f"{V3}/pushers")
    assert resp.code == 200, resp
    return resp.json["pushers"]


@pytest_twisted.ensureDeferred
async def test_pushers_set_list_replace_and_delete(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    assert await listed(alice) == []
    assert (await alice.get(f"{V3}/pushers", token=False)).code == 401

    assert (await alice.post(f"{V3}/pushers/set", pusher())).code == 200
    expected = {k: v for k, v in pusher().items() if k != "append"}
    assert await listed(alice) == [expected]
    # Same (app_id, pushkey): replaced, not added.
    changed = pusher(lang="de", profile_tag="tag")
    assert (await alice.post(f"{V3}/pushers/set", changed)).code == 200
    assert await listed(alice) == [changed]
    assert (await alice.post(f"{V3}/pushers/set", pusher("key2"))).code == 200
    assert [p["pushkey"] for p in await listed(alice)] == ["key1", "key2"]

    # Bob taking the same pushkey with append: both keep it; without: alice loses it.
    assert (await bob.post(f"{V3}/pushers/set", pusher("key2", append=True))).code == 200
    assert [p["pushkey"] for p in await listed(alice)] == ["key1", "key2"]
    assert (await bob.post(f"{V3}/pushers/set", pusher("key1"))).code == 200
    assert [p["pushkey"] for p in await listed(alice)] == ["key2"]
    assert [p["pushkey"] for p in await listed(bob)] == ["key1", "key2"]

    # kind null deletes (only the requester's).
    delete = {"kind": None, "app_id": "im.vector.app.android", "pushkey": "key2"}
    assert (await alice.post(f"{V3}/pushers/set", delete)).code == 200
    assert await listed(alice) == []
    assert len(await listed(bob)) == 2
    # Deleting what is not there is fine too.
    assert (await alice.post(f"{V3}/pushers/set", delete)).code == 200


@pytest_twisted.ensureDeferred
async def test_bad_pushers_are_refused_and_nothing_stored(server):
    hs, anon = server
    alice = await anon.register("alice")
    no_kind = pusher()
    del no_kind["kind"]
    no_data = pusher()
    del no_data["data"]
    no_lang = pusher()
    del no_lang["lang"]
    for body, errcode in (
        (no_kind, "M_MISSING_PARAM"),
        (no_data, "M_MISSING_PARAM"),
        (no_lang, "M_MISSING_PARAM"),
        ({"kind": None, "app_id": "a"}, "M_MISSING_PARAM"),
        (pusher(kind="email"), "M_INVALID_PARAM"),
        (pusher(kind=3), "M_BAD_JSON"),
        (pusher(app_id="a" * 65), "M_INVALID_PARAM"),
        (pusher(pushkey="k" * 513), "M_INVALID_PARAM"),
        (pusher(pushkey=""), "M_INVALID_PARAM"),
        (pusher(lang="e\x00n"), "M_INVALID_PARAM"),
        (pusher(append="yes"), "M_BAD_JSON"),
        (pusher(data="x"), "M_BAD_JSON"),
        (pusher(data={}), "M_MISSING_PARAM"),
        (pusher(data={"url": "ftp://x/_matrix/push/v1/notify"}), "M_INVALID_PARAM"),
        (pusher(data={"url": "https://x/other"}), "M_INVALID_PARAM"),
        (pusher(data={"url": "http://[::1/_matrix/push/v1/notify"}), "M_INVALID_PARAM"),
    ):
        resp = await alice.post(f"{V3}/pushers/set", body)
        assert (resp.code, resp.json.get("errcode")) == (400, errcode), (body, resp)
    assert await listed(alice) == []


@pytest_twisted.ensureDeferred
async def test_notifications_need_a_token_and_start_empty(server):
    """(What notifications hold: tests/push/test_notifications.py.)"""
    hs, anon = server
    alice = await anon.register("alice")
    resp = await alice.get(f"{V3}/notifications")
    assert (resp.code, resp.json) == (200, {"notifications": []})
    assert (await alice.get(f"{V3}/notifications", token=False)).code == 401


@pytest_twisted.ensureDeferred
async def test_no_third_party_identifiers_or_networks(server):
    hs, anon = server
    alice = await anon.register("alice")
    resp = await alice.get(f"{V3}/account/3pid")
    assert (resp.code, resp.json) == (200, {"threepids": []})
    assert (await alice.get(f"{V3}/account/3pid", token=False)).code == 401
    threepid = {"client_secret": "s", "sid": "1", "id_server": "id.example", "id_access_token": "t"}
    for path in ("", "/add", "/bind", "/delete", "/unbind"):
        resp = await alice.post(f"{V3}/account/3pid{path}", threepid)
        assert (resp.code, resp.json["errcode"]) == (403, "M_THREEPID_DENIED"), (path, resp)
    for medium in ("email", "msisdn"):
        body = {"client_secret": "s", "email": "a@b.c", "send_attempt": 1}
        resp = await alice.post(f"{V3}/account/3pid/{medium}/requestToken", body)
        assert (resp.code, resp.json["errcode"]) == (400, "M_THREEPID_MEDIUM_NOT_SUPPORTED")
    # The capability tells clients not to try.
    caps = (await alice.get(f"{V3}/capabilities")).json["capabilities"]
    assert caps["m.3pid_changes"] == {"enabled": False}

    resp = await alice.get(f"{V3}/thirdparty/protocols")
    assert (resp.code, resp.json) == (200, {})
    for path in (
        "/thirdparty/protocol/irc",
        "/thirdparty/location/irc",
        "/thirdparty/user/irc",
        "/thirdparty/location",
        "/thirdparty/user",
    ):
        resp = await alice.get(f"{V3}{path}")
        assert (resp.code, resp.json["errcode"]) == (404, "M_NOT_FOUND"), (path, resp)
