"""Accounts over real HTTP: registration (UIA), login, whoami, logout, devices, errors."""

from __future__ import annotations

import pytest_twisted

V3 = "/_matrix/client/v3"


@pytest_twisted.ensureDeferred
async def test_register_login_whoami_logout(server):
    hs, anon = server
    alice = await anon.register("alice", "pw-alice")
    assert alice.user_id == "@alice:test.local"
    who = await alice.get(f"{V3}/account/whoami")
    assert (
        who.code == 200
        and who.json["user_id"] == alice.user_id
        and who.json["device_id"] == alice.device_id
    )

    login = await anon.post(
        f"{V3}/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "alice"},
            "password": "pw-alice",
        },
        token=False,
    )
    assert login.code == 200, login
    token2 = login.json["access_token"]
    assert token2 != alice.access_token

    bad = await anon.post(
        f"{V3}/login",
        {"type": "m.login.password", "user": "alice", "password": "nope"},
        token=False,
    )
    assert bad.code == 403 and bad.json["errcode"] == "M_FORBIDDEN"

    assert (await alice.post(f"{V3}/logout")).code == 200
    gone = await alice.get(f"{V3}/account/whoami")
    assert gone.code == 401 and gone.json["errcode"] == "M_UNKNOWN_TOKEN"
    still = await anon.get(f"{V3}/account/whoami", token=token2)
    assert still.code == 200


@pytest_twisted.ensureDeferred
async def test_register_rejects_taken_and_invalid_names(server):
    hs, anon = server
    await anon.register("bob")
    taken = await anon.post(f"{V3}/register", {"username": "bob", "password": "x"}, token=False)
    assert taken.code == 400 and taken.json["errcode"] == "M_USER_IN_USE"
    invalid = await anon.post(
        f"{V3}/register", {"username": "bad name!", "password": "x"}, token=False
    )
    assert invalid.code == 400 and invalid.json["errcode"] == "M_INVALID_USERNAME"
    avail = await anon.get(f"{V3}/register/available", query={"username": "carol"}, token=False)
    assert avail.code == 200 and avail.json == {"available": True}


@pytest_twisted.ensureDeferred
async def test_missing_and_unknown_tokens(server):
    hs, anon = server
    missing = await anon.get(f"{V3}/account/whoami", token=False)
    assert missing.code == 401 and missing.json["errcode"] == "M_MISSING_TOKEN"
    unknown = await anon.get(f"{V3}/account/whoami", token="atr_nope")
    assert unknown.code == 401 and unknown.json["errcode"] == "M_UNKNOWN_TOKEN"


@pytest_twisted.ensureDeferred
async def test_bad_bodies_get_matrix_errors(server):
    hs, anon = server
    not_json = await anon.request("POST", f"{V3}/login", raw=b"{nope", token=False)
    assert not_json.code == 400 and not_json.json["errcode"] == "M_NOT_JSON"
    nan = await anon.request("POST", f"{V3}/login", raw=b'{"type": NaN}', token=False)
    assert nan.code == 400 and nan.json["errcode"] == "M_NOT_JSON"
    array = await anon.request("POST", f"{V3}/login", raw=b"[1, 2]", token=False)
    assert array.code == 400 and array.json["errcode"] == "M_BAD_JSON"
    wrong_type = await anon.post(
        f"{V3}/login", {"type": "m.login.password", "user": "x", "password": 5}, token=False
    )
    assert wrong_type.code == 400 and wrong_type.json["errcode"] == "M_BAD_JSON"
    huge = await anon.request(
        "POST", f"{V3}/login", raw=b"{" + b" " * (11 * 1024 * 1024) + b"}", token=False
    )
    assert huge.code == 413 and huge.json["errcode"] == "M_TOO_LARGE"
    unknown = await anon.get("/_matrix/client/v3/nope", token=False)
    assert unknown.code == 404 and unknown.json["errcode"] == "M_UNRECOGNIZED"


@pytest_twisted.ensureDeferred
async def test_devices_listing_renaming_and_deletion_needs_password(server):
    hs, anon = server
    alice = await anon.register("dora", "pw")
    devices = await alice.get(f"{V3}/devices")
    assert [d["device_id"] for d in devices.json["devices"]] == [alice.device_id]
    assert (
        await alice.put(f"{V3}/devices/{alice.device_id}", {"display_name": "phone"})
    ).code == 200
    got = await alice.get(f"{V3}/devices/{alice.device_id}")
    assert got.json["display_name"] == "phone"
    assert (await alice.get(f"{V3}/devices/NOPE")).code == 404

    first = await alice.delete(f"{V3}/devices/{alice.device_id}", {})
    assert first.code == 401 and first.json["flows"] == [{"stages": ["m.login.password"]}]
    wrong = await alice.delete(
        f"{V3}/devices/{alice.device_id}",
        {
            "auth": {
                "type": "m.login.password",
                "session": first.json["session"],
                "identifier": {"type": "m.id.user", "user": "dora"},
                "password": "bad",
            }
        },
    )
    assert wrong.code == 401 and wrong.json["errcode"] == "M_FORBIDDEN"
    ok = await alice.delete(
        f"{V3}/devices/{alice.device_id}",
        {
            "auth": {
                "type": "m.login.password",
                "session": first.json["session"],
                "identifier": {"type": "m.id.user", "user": "dora"},
                "password": "pw",
            }
        },
    )
    assert ok.code == 200
    # Deleting the device revoked its token.
    assert (await alice.get(f"{V3}/account/whoami")).code == 401


@pytest_twisted.ensureDeferred
async def test_registration_closed_by_default(tmp_path):
    from tests.support.server import running_homeserver

    async with running_homeserver(tmp_path, enable_registration=False) as (hs, anon):
        resp = await anon.post(f"{V3}/register", {"username": "x", "password": "y"}, token=False)
        assert resp.code == 403 and resp.json["errcode"] == "M_FORBIDDEN"
