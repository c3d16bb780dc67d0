"""Push rules over HTTP: the spec's default ruleset, user rules and their
order, enabling and actions, and m.push_rules in /sync account data."""

from __future__ import annotations

import pytest_twisted

from tests.api.sync_sections_helper import global_account_data, sections_sync
from tests.support.client import q

V3 = "/_matrix/client/v3"
SPEC_OVERRIDE_IDS = [
    ".m.rule.master",
    ".m.rule.suppress_notices",
    ".m.rule.invite_for_me",
    ".m.rule.member_event",
    ".m.rule.is_user_mention",
    ".m.rule.is_room_mention",
    ".m.rule.tombstone",
    ".m.rule.reaction",
    ".m.rule.room.server_acl",
    ".m.rule.suppress_edits",
]
SPEC_UNDERRIDE_IDS = [
    ".m.rule.call",
    ".m.rule.encrypted_room_one_to_one",
    ".m.rule.room_one_to_one",
    ".m.rule.message",
    ".m.rule.encrypted",
]


def rule_path(kind: str, rule_id: str, attr: str = "") -> str:
    return f"{V3}/pushrules/global/{kind}/{q(rule_id)}" + (f"/{attr}" if attr else "")


def ids(rules: list[dict]) -> list[str]:
    return [r["rule_id"] for r in rules]


@pytest_twisted.ensureDeferred
async def test_default_ruleset_follows_the_spec(server):
    hs, anon = server
    alice = await anon.register("alice")
    resp = await alice.get(f"{V3}/pushrules/")
    assert resp.code == 200
    ruleset = resp.json["global"]
    assert set(ruleset) == {"override", "content", "room", "sender", "underride"}
    assert ids(ruleset["override"]) == SPEC_OVERRIDE_IDS
    assert ids(ruleset["underride"]) == SPEC_UNDERRIDE_IDS
    assert ruleset["content"] == ruleset["room"] == ruleset["sender"] == []
    for rule in ruleset["override"] + ruleset["underride"]:
        assert rule["default"] is True and isinstance(rule["actions"], list)
        assert isinstance(rule["conditions"], list)
    by_id = {r["rule_id"]: r for r in ruleset["override"]}
    assert by_id[".m.rule.master"]["enabled"] is False
    assert by_id[".m.rule.suppress_notices"]["enabled"] is True
    # The user's own ID is filled in where the spec says "[the user's Matrix ID]".
    assert {"key": "state_key", "kind": "event_match", "pattern": alice.user_id} in by_id[
        ".m.rule.invite_for_me"
    ]["conditions"]
    assert by_id[".m.rule.is_user_mention"]["conditions"][0]["value"] == alice.user_id
    assert by_id[".m.rule.is_user_mention"]["actions"] == [
        "notify",
        {"set_tweak": "sound", "value": "default"},
        {"set_tweak": "highlight"},
    ]
    # GET /pushrules/global/ is the ruleset itself.
    assert (await alice.get(f"{V3}/pushrules/global/")).json == ruleset
    single = await alice.get(rule_path("underride", ".m.rule.message"))
    assert single.json == {
        "rule_id": ".m.rule.message",
        "default": True,
        "enabled": True,
        "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.message"}],
        "actions": ["notify"],
    }


@pytest_twisted.ensureDeferred
async def test_user_rules_order_update_and_delete(server):
    hs, anon = server
    alice = await anon.register("ada")

    async def put(kind, rule_id, body, **query):
        path = rule_path(kind, rule_id)
        return await alice.request("PUT", path, body, query=query or None)

    assert (await put("content", "cake", {"pattern": "cake*", "actions": ["notify"]})).code == 200
    assert (await put("content", "pie", {"pattern": "pie", "actions": []})).code == 200
    # Created without position: the most important of its kind.
    content = (await alice.get(f"{V3}/pushrules/")).json["global"]["content"]
    assert ids(content) == ["pie", "cake"]
    assert content[1] == {
        "rule_id": "cake",
        "default": False,
        "enabled": True,
        "pattern": "cake*",
        "actions": ["notify"],
    }
    assert (await put("content", "tea", {"pattern": "tea", "actions": []}, after="pie")).code == 200
    assert (
        await put("content", "jam", {"pattern": "jam", "actions": []}, before="pie")
    ).code == 200
    content = (await alice.get(f"{V3}/pushrules/")).json["global"]["content"]
    assert ids(content) == ["jam", "pie", "tea", "cake"]
    # Updating keeps the position and the enabled flag, replaces the rest.
    assert (await alice.put(rule_path("content", "pie", "enabled"), {"enabled": False})).code == 200
    assert (await put("content", "pie", {"pattern": "pies", "actions": ["notify"]})).code == 200
    content = (await alice.get(f"{V3}/pushrules/")).json["global"]["content"]
    assert ids(content) == ["jam", "pie", "tea", "cake"]
    assert content[1]["pattern"] == "pies" and content[1]["enabled"] is False
    # Moving an existing rule.
    assert (
        await put("content", "cake", {"pattern": "cake*", "actions": []}, before="jam")
    ).code == 200
    content = (await alice.get(f"{V3}/pushrules/")).json["global"]["content"]
    assert ids(content) == ["cake", "jam", "pie", "tea"]

    # Override rules come after .m.rule.master but before the other defaults.
    room_rule = {
        "conditions": [{"kind": "event_match", "key": "room_id", "pattern": "!r:x"}],
        "actions": [],
    }
    assert (await put("override", "mine", room_rule)).code == 200
    override = (await alice.get(f"{V3}/pushrules/")).json["global"]["override"]
    assert ids(override)[:3] == [".m.rule.master", "mine", ".m.rule.suppress_notices"]
    assert override[1]["conditions"] == room_rule["conditions"]
    assert (await put("room", "!r:test.local", {"actions": ["notify"]})).code == 200
    assert (await put("sender", "@x:test.local", {"actions": []})).code == 200

    assert (await alice.delete(rule_path("content", "jam"))).code == 200
    gone = await alice.get(rule_path("content", "jam"))
    assert gone.code == 404 and gone.json["errcode"] == "M_NOT_FOUND"
    again = await alice.delete(rule_path("content", "jam"))
    assert again.code == 404 and again.json["errcode"] == "M_NOT_FOUND"
    # Another user's rules are their own.
    bob = await anon.register("bo")
    assert (await bob.get(f"{V3}/pushrules/")).json["global"]["content"] == []


@pytest_twisted.ensureDeferred
async def test_enabled_and_actions_of_default_and_user_rules(server):
    hs, anon = server
    alice = await anon.register("eve")
    _, since = await sections_sync(hs, alice.user_id)

    master = rule_path("override", ".m.rule.master")
    assert (await alice.get(master + "/enabled")).json == {"enabled": False}
    assert (await alice.put(master + "/enabled", {"enabled": True})).code == 200
    assert (await alice.get(master + "/enabled")).json == {"enabled": True}
    message = rule_path("underride", ".m.rule.message")
    assert (await alice.put(message + "/actions", {"actions": []})).code == 200
    assert (await alice.get(message + "/actions")).json == {"actions": []}

    # Every change reaches /sync as the m.push_rules account data event.
    synced, since = await sections_sync(hs, alice.user_id, since)
    rules = global_account_data(synced)["m.push_rules"]["global"]
    assert rules["override"][0] == {
        "rule_id": ".m.rule.master",
        "default": True,
        "enabled": True,
        "conditions": [],
        "actions": [],
    }
    assert {r["rule_id"]: r for r in rules["underride"]}[".m.rule.message"]["actions"] == []
    quiet, _ = await sections_sync(hs, alice.user_id, since)
    assert quiet == {}

    assert (await alice.put(rule_path("sender", "@spam:x"), {"actions": []})).code == 200
    assert (
        await alice.put(rule_path("sender", "@spam:x", "enabled"), {"enabled": False})
    ).code == 200
    assert (await alice.get(rule_path("sender", "@spam:x", "enabled"))).json == {"enabled": False}
    assert (
        await alice.put(rule_path("sender", "@spam:x", "actions"), {"actions": ["notify"]})
    ).code == 200
    assert (await alice.get(rule_path("sender", "@spam:x"))).json == {
        "rule_id": "@spam:x",
        "default": False,
        "enabled": False,
        "actions": ["notify"],
    }
    synced, _ = await sections_sync(hs, alice.user_id, since)
    assert ids(global_account_data(synced)["m.push_rules"]["global"]["sender"]) == ["@spam:x"]


@pytest_twisted.ensureDeferred
async def test_push_rule_bad_input(server):
    hs, anon = server
    alice = await anon.register("pat")
    ok_body = {"actions": ["notify"]}
    cases = [
        ("PUT", rule_path("content", "nopattern"), {"actions": []}, 400, "M_MISSING_PARAM"),
        (
            "PUT",
            rule_path("content", ".m.mine"),
            {"pattern": "x", "actions": []},
            400,
            "M_INVALID_PARAM",
        ),
        (
            "PUT",
            rule_path("content", "a/b"),
            {"pattern": "x", "actions": []},
            400,
            "M_INVALID_PARAM",
        ),
        ("PUT", rule_path("override", "x"), {}, 400, "M_MISSING_PARAM"),
        ("PUT", rule_path("override", "x"), {"actions": "notify"}, 400, "M_BAD_JSON"),
        ("PUT", rule_path("override", "x"), {"actions": ["explode"]}, 400, "M_BAD_JSON"),
        ("PUT", rule_path("override", "x"), {"actions": [5]}, 400, "M_BAD_JSON"),
        (
            "PUT",
            rule_path("override", "x"),
            {"actions": [], "conditions": "all"},
            400,
            "M_BAD_JSON",
        ),
        ("PUT", rule_path("override", "x"), {"actions": [], "conditions": [{}]}, 400, "M_BAD_JSON"),
        ("PUT", rule_path("room", "not-a-room"), ok_body, 400, "M_INVALID_PARAM"),
        ("PUT", rule_path("sender", "not-a-user"), ok_body, 400, "M_INVALID_PARAM"),
        ("PUT", rule_path("nonsense", "x"), ok_body, 400, "M_INVALID_PARAM"),
        ("PUT", rule_path("override", "x"), [], 400, "M_BAD_JSON"),
        ("GET", rule_path("override", "nothing"), None, 404, "M_NOT_FOUND"),
        ("GET", rule_path("nonsense", "x"), None, 400, "M_INVALID_PARAM"),
        ("GET", f"{V3}/pushrules/device/override/x", None, 400, "M_INVALID_PARAM"),
        ("DELETE", rule_path("override", ".m.rule.master"), None, 400, "M_INVALID_PARAM"),
        (
            "PUT",
            rule_path("override", ".m.rule.master", "enabled"),
            {"enabled": "yes"},
            400,
            "M_BAD_JSON",
        ),
        ("PUT", rule_path("override", ".m.rule.master", "enabled"), {}, 400, "M_BAD_JSON"),
        ("PUT", rule_path("override", "nothing", "enabled"), {"enabled": True}, 404, "M_NOT_FOUND"),
        ("PUT", rule_path("override", "nothing", "actions"), {"actions": []}, 404, "M_NOT_FOUND"),
        (
            "PUT",
            rule_path("override", ".m.rule.master", "actions"),
            {"actions": {}},
            400,
            "M_BAD_JSON",
        ),
        ("GET", rule_path("content", "nothing", "actions"), None, 404, "M_NOT_FOUND"),
    ]
    for method, path, body, code, errcode in cases:
        resp = await alice.request(method, path, body)
        assert (resp.code, resp.json["errcode"]) == (code, errcode), (method, path, body, resp)
    anchored = await alice.request(
        "PUT", rule_path("override", "x"), ok_body, query={"before": "missing"}
    )
    assert anchored.code == 400 and anchored.json["errcode"] == "M_UNKNOWN"
    to_default = await alice.request(
        "PUT", rule_path("override", "x"), ok_body, query={"after": ".m.rule.master"}
    )
    assert to_default.code == 400
    not_json = await alice.request("PUT", rule_path("override", "x"), raw=b"{")
    assert not_json.code == 400 and not_json.json["errcode"] == "M_NOT_JSON"
    no_token = await alice.get(f"{V3}/pushrules/", token=False)
    assert no_token.code == 401 and no_token.json["errcode"] == "M_MISSING_TOKEN"
    # None of the refused requests stored anything.
    stored = await hs.push_rules_store.get_push_rules_for_user(alice.user_id)
    assert stored.rules == () and dict(stored.overrides) == {}
