"""Server-side key backups over HTTP (client-server API "Server-side key backups"),
on SQLite and PostgreSQL. matrix-nio has no key-backup calls, so these use plain HTTP."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer

from tests.support.e2ee import V3

ALG = "m.megolm_backup.v1.curve25519-aes-sha2"
AUTH = {"public_key": "abcdefg", "signatures": {"@alice:test.local": {"ed25519:DEV": "sig"}}}


def key(first: int = 0, forwarded: int = 0, verified: bool = False, tag: str = "x") -> dict:
    return {
        "first_message_index": first,
        "forwarded_count": forwarded,
        "is_verified": verified,
        "session_data": {"ephemeral": "e", "ciphertext": tag, "mac": "m"},
    }


async def new_backup(client, auth_data=AUTH) -> str:
    resp = await client.post(f"{V3}/room_keys/version", {"algorithm": ALG, "auth_data": auth_data})
    assert resp.code == 200, resp
    return resp.json["version"]


async def expect(resp_coro, code, errcode=None):
    resp = await resp_coro
    assert resp.code == code, resp
    if errcode is not None:
        assert resp.json["errcode"] == errcode, resp
    return resp.json


@pytest_twisted.ensureDeferred
async def test_backup_versions_lifecycle(server):
    hs, anon = server
    alice = await anon.register("alice")
    await expect(alice.get(f"{V3}/room_keys/version"), 404, "M_NOT_FOUND")
    assert (await alice.get(f"{V3}/room_keys/version", token=False)).code == 401

    v1 = await new_backup(alice)
    current = await expect(alice.get(f"{V3}/room_keys/version"), 200)
    assert current == {
        "algorithm": ALG,
        "auth_data": AUTH,
        "count": 0,
        "etag": current["etag"],
        "version": v1,
    }
    assert isinstance(current["etag"], str)
    assert await expect(alice.get(f"{V3}/room_keys/version/{v1}"), 200) == current

    # Only auth_data changes.
    new_auth = {"public_key": "other"}
    await expect(
        alice.put(f"{V3}/room_keys/version/{v1}", {"algorithm": ALG, "auth_data": new_auth}), 200
    )
    await expect(
        alice.put(
            f"{V3}/room_keys/version/{v1}",
            {"algorithm": ALG, "auth_data": new_auth, "version": v1},
        ),
        200,
    )
    assert (await expect(alice.get(f"{V3}/room_keys/version"), 200))["auth_data"] == new_auth

    # A newer backup becomes current; the older one stays readable.
    v2 = await new_backup(alice)
    assert int(v2) > int(v1)
    assert (await expect(alice.get(f"{V3}/room_keys/version"), 200))["version"] == v2
    assert (await expect(alice.get(f"{V3}/room_keys/version/{v1}"), 200))["version"] == v1

    # Deleting the current one makes the older one current; deleting twice succeeds.
    await expect(alice.delete(f"{V3}/room_keys/version/{v2}"), 200)
    await expect(alice.delete(f"{V3}/room_keys/version/{v2}"), 200)
    await expect(alice.get(f"{V3}/room_keys/version/{v2}"), 404, "M_NOT_FOUND")
    assert (await expect(alice.get(f"{V3}/room_keys/version"), 200))["version"] == v1
    # Version numbers are never reused.
    v3 = await new_backup(alice)
    assert int(v3) > int(v2)
    await expect(alice.delete(f"{V3}/room_keys/version/{v1}"), 200)
    await expect(alice.delete(f"{V3}/room_keys/version/{v3}"), 200)
    await expect(alice.get(f"{V3}/room_keys/version"), 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_keys_put_get_delete_with_count_and_etag(server):
    hs, anon = server
    alice = await anon.register("alice")
    version = await new_backup(alice)
    q = {"version": version}
    room, other_room = "!room:test.local", "!other:test.local"

    one = await expect(alice.put(f"{V3}/room_keys/keys/{room}/s1", key(), query=q), 200)
    assert one["count"] == 1
    two = await expect(
        alice.put(f"{V3}/room_keys/keys/{room}", {"sessions": {"s2": key(tag="2")}}, query=q), 200
    )
    assert two["count"] == 2 and two["etag"] != one["etag"]
    three = await expect(
        alice.put(
            f"{V3}/room_keys/keys",
            {"rooms": {other_room: {"sessions": {"s3": key(tag="3")}}}},
            query=q,
        ),
        200,
    )
    assert three["count"] == 3
    info = await expect(alice.get(f"{V3}/room_keys/version"), 200)
    assert (info["count"], info["etag"]) == (3, three["etag"])

    # An upload that changes nothing keeps the etag.
    same = await expect(alice.put(f"{V3}/room_keys/keys/{room}/s1", key(), query=q), 200)
    assert same == three

    assert await expect(alice.get(f"{V3}/room_keys/keys/{room}/s1", query=q), 200) == key()
    assert await expect(alice.get(f"{V3}/room_keys/keys/{room}", query=q), 200) == {
        "sessions": {"s1": key(), "s2": key(tag="2")}
    }
    assert await expect(alice.get(f"{V3}/room_keys/keys", query=q), 200) == {
        "rooms": {
            room: {"sessions": {"s1": key(), "s2": key(tag="2")}},
            other_room: {"sessions": {"s3": key(tag="3")}},
        }
    }
    # Nothing stored: empty answers for a room, 404 for a session.
    assert await expect(alice.get(f"{V3}/room_keys/keys/!none:x", query=q), 200) == {"sessions": {}}
    await expect(alice.get(f"{V3}/room_keys/keys/{room}/nope", query=q), 404, "M_NOT_FOUND")

    gone = await expect(alice.delete(f"{V3}/room_keys/keys/{room}/s1", query=q), 200)
    assert gone["count"] == 2 and gone["etag"] != three["etag"]
    # Deleting nothing keeps the etag.
    assert await expect(alice.delete(f"{V3}/room_keys/keys/{room}/s1", query=q), 200) == gone
    assert (await expect(alice.delete(f"{V3}/room_keys/keys/{room}", query=q), 200))["count"] == 1
    assert (await expect(alice.delete(f"{V3}/room_keys/keys", query=q), 200))["count"] == 0
    assert await expect(alice.get(f"{V3}/room_keys/keys", query=q), 200) == {"rooms": {}}

    # Keys of an older backup stay readable and deletable, not writable.
    await expect(alice.put(f"{V3}/room_keys/keys/{room}/s1", key(), query=q), 200)
    newer = await new_backup(alice)
    wrong = await expect(
        alice.put(f"{V3}/room_keys/keys/{room}/s9", key(), query=q),
        403,
        "M_WRONG_ROOM_KEYS_VERSION",
    )
    assert wrong["current_version"] == newer
    assert await expect(alice.get(f"{V3}/room_keys/keys/{room}/s1", query=q), 200) == key()
    assert (await expect(alice.get(f"{V3}/room_keys/version/{newer}"), 200))["count"] == 0
    # Deleting a version deletes its keys.
    await expect(alice.delete(f"{V3}/room_keys/version/{version}"), 200)
    await expect(alice.get(f"{V3}/room_keys/keys", query=q), 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_replacement_rules_keep_the_better_key(server):
    """Spec: keep the verified key; then the lower first_message_index; then
    the lower forwarded_count; a tie keeps the stored key."""
    hs, anon = server
    alice = await anon.register("alice")
    q = {"version": await new_backup(alice)}
    path = f"{V3}/room_keys/keys/!r:test.local/sess"

    async def offer(new: dict) -> dict:
        await expect(alice.put(path, new, query=q), 200)
        return await expect(alice.get(path, query=q), 200)

    stored = await offer(key(first=5, forwarded=2, verified=False, tag="a"))
    # Unverified never replaces verified, however good its index.
    stored = await offer(key(first=1, forwarded=0, verified=True, tag="b"))
    assert stored["session_data"]["ciphertext"] == "b"
    assert (await offer(key(first=0, forwarded=0, verified=False, tag="c")))["session_data"][
        "ciphertext"
    ] == "b"
    # Same verification: a lower first_message_index wins, a higher one loses.
    assert (await offer(key(first=0, forwarded=9, verified=True, tag="d")))["session_data"][
        "ciphertext"
    ] == "d"
    assert (await offer(key(first=3, forwarded=0, verified=True, tag="e")))["session_data"][
        "ciphertext"
    ] == "d"
    # Same index: a lower forwarded_count wins; equal keeps the stored key.
    assert (await offer(key(first=0, forwarded=4, verified=True, tag="f")))["session_data"][
        "ciphertext"
    ] == "f"
    assert (await offer(key(first=0, forwarded=4, verified=True, tag="g")))["session_data"][
        "ciphertext"
    ] == "f"
    assert (await offer(key(first=0, forwarded=5, verified=True, tag="h")))["session_data"][
        "ciphertext"
    ] == "f"


@pytest_twisted.ensureDeferred
async def test_concurrent_creations_and_uploads(server):
    """Versions created at once get distinct numbers; concurrent uploads of
    one session leave the best key (the rule is applied by the upsert)."""
    hs, anon = server
    alice = await anon.register("alice")
    created = await defer.gatherResults([defer.ensureDeferred(new_backup(alice)) for _ in range(6)])
    assert len(set(created)) == 6
    current = max(created, key=int)
    q = {"version": current}
    path = f"{V3}/room_keys/keys/!r:test.local/sess"
    offers = [key(first=i % 4, forwarded=i, tag=str(i)) for i in range(10, 0, -1)]
    results = await defer.gatherResults(
        [defer.ensureDeferred(alice.put(path, o, query=q)) for o in offers]
    )
    assert all(r.code == 200 for r in results), results
    best = await expect(alice.get(path, query=q), 200)
    assert (best["first_message_index"], best["forwarded_count"]) == (0, 4)


@pytest_twisted.ensureDeferred
async def test_backups_are_per_user(server):
    hs, anon = server
    alice = await anon.register("alice")
    bob = await anon.register("bob")
    version = await new_backup(alice)
    q = {"version": version}
    await expect(alice.put(f"{V3}/room_keys/keys/!r:test.local/s", key(), query=q), 200)

    # Bob has no backup: alice's version means nothing to him.
    await expect(bob.get(f"{V3}/room_keys/version"), 404, "M_NOT_FOUND")
    await expect(bob.get(f"{V3}/room_keys/version/{version}"), 404, "M_NOT_FOUND")
    await expect(bob.get(f"{V3}/room_keys/keys", query=q), 404, "M_NOT_FOUND")
    await expect(bob.put(f"{V3}/room_keys/keys/!r:test.local/s", key(), query=q), 404)
    await expect(bob.delete(f"{V3}/room_keys/keys", query=q), 404, "M_NOT_FOUND")
    await expect(
        bob.put(f"{V3}/room_keys/version/{version}", {"algorithm": ALG, "auth_data": {}}),
        404,
        "M_NOT_FOUND",
    )
    await expect(bob.delete(f"{V3}/room_keys/version/{version}"), 404, "M_NOT_FOUND")
    # His own backup has the same number and none of her keys.
    assert await new_backup(bob) == version
    assert await expect(bob.get(f"{V3}/room_keys/keys", query=q), 200) == {"rooms": {}}
    assert (await expect(alice.get(f"{V3}/room_keys/version"), 200))["count"] == 1


@pytest_twisted.ensureDeferred
async def test_bad_requests_are_matrix_errors(server):
    hs, anon = server
    alice = await anon.register("alice")
    path = f"{V3}/room_keys/keys/!r:test.local/s"
    # No backup at all: writes are 404 (nothing to be "wrong" against).
    await expect(alice.put(path, key(), query={"version": "1"}), 404, "M_NOT_FOUND")

    for body, errcode in (
        ({"auth_data": {}}, "M_MISSING_PARAM"),
        ({"algorithm": ALG}, "M_MISSING_PARAM"),
        ({"algorithm": 7, "auth_data": {}}, "M_BAD_JSON"),
        ({"algorithm": ALG, "auth_data": "x"}, "M_BAD_JSON"),
    ):
        await expect(alice.post(f"{V3}/room_keys/version", body), 400, errcode)
    await expect(alice.request("POST", f"{V3}/room_keys/version", raw=b"{"), 400, "M_NOT_JSON")
    version = await new_backup(alice)
    q = {"version": version}

    for bad, in_path in (
        ("0", "0"),
        ("-1", "-1"),
        ("abc", "abc"),
        ("1.5", "1.5"),
        ("99999999999999999999", "99999999999999999999"),
        ("\u0661", "%D9%A1"),  # ARABIC-INDIC DIGIT ONE: a digit, not a version
    ):
        await expect(alice.get(f"{V3}/room_keys/version/{in_path}"), 404, "M_NOT_FOUND")
        await expect(alice.delete(f"{V3}/room_keys/version/{in_path}"), 404, "M_NOT_FOUND")
        await expect(alice.get(f"{V3}/room_keys/keys", query={"version": bad}), 404, "M_NOT_FOUND")
        wrong = await expect(
            alice.put(path, key(), query={"version": bad}), 403, "M_WRONG_ROOM_KEYS_VERSION"
        )
        assert wrong["current_version"] == version
    await expect(alice.get(f"{V3}/room_keys/keys"), 400, "M_MISSING_PARAM")
    await expect(alice.put(path, key()), 400, "M_MISSING_PARAM")
    await expect(alice.delete(f"{V3}/room_keys/keys"), 400, "M_MISSING_PARAM")

    # Updating: the algorithm cannot change, a body version must match the path.
    upd = f"{V3}/room_keys/version/{version}"
    await expect(alice.put(upd, {"algorithm": "other", "auth_data": {}}), 400, "M_INVALID_PARAM")
    await expect(
        alice.put(upd, {"algorithm": ALG, "auth_data": {}, "version": "77"}), 400, "M_INVALID_PARAM"
    )
    await expect(alice.put(f"{V3}/room_keys/version/77", {"algorithm": ALG, "auth_data": {}}), 404)

    for body, errcode in (
        ({}, "M_MISSING_PARAM"),
        ({**key(), "is_verified": "yes"}, "M_BAD_JSON"),
        ({**key(), "first_message_index": -1}, "M_BAD_JSON"),
        ({**key(), "first_message_index": 2**63}, "M_BAD_JSON"),
        ({**key(), "forwarded_count": 1.5}, "M_BAD_JSON"),
        ({**key(), "forwarded_count": True}, "M_BAD_JSON"),
        ({**key(), "session_data": "x"}, "M_BAD_JSON"),
    ):
        await expect(alice.put(path, body, query=q), 400, errcode)
    await expect(
        alice.put(f"{V3}/room_keys/keys/notaroom/s", key(), query=q), 400, "M_INVALID_PARAM"
    )
    for body, errcode in (
        ({}, "M_MISSING_PARAM"),
        ({"sessions": []}, "M_BAD_JSON"),
        ({"sessions": {"s": "x"}}, "M_BAD_JSON"),
    ):
        await expect(alice.put(f"{V3}/room_keys/keys/!r:x", body, query=q), 400, errcode)
    for body, errcode in (
        ({}, "M_MISSING_PARAM"),
        ({"rooms": []}, "M_BAD_JSON"),
        ({"rooms": {"nobang": {"sessions": {}}}}, "M_INVALID_PARAM"),
        ({"rooms": {"!r:x": {"sessions": {"": key()}}}}, "M_INVALID_PARAM"),
        ({"rooms": {"!r:x": {"sessions": {"s" * 300: key()}}}}, "M_INVALID_PARAM"),
    ):
        await expect(alice.put(f"{V3}/room_keys/keys", body, query=q), 400, errcode)
    # A rejected request stored nothing.
    assert (await expect(alice.get(f"{V3}/room_keys/version"), 200))["count"] == 0
