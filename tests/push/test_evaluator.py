"""Push rule conditions and rule order (spec "Push Rules"), without I/O."""

from __future__ import annotations

from atrium.handlers.push_rules import build_ruleset
from atrium.push.evaluator import RoomFacts, compile_ruleset, evaluate, split_path, summarize
from atrium.storage.stores.push_rules import StoredPushRule, UserPushRules

ME = "@me:test"
FACTS = RoomFacts(
    member_count=2, user_levels={"@mod:test": 50}, users_default=0, notification_levels={}
)


def rules(*stored: StoredPushRule, overrides=None):
    return compile_ruleset(build_ruleset(ME, UserPushRules(tuple(stored), overrides or {})))


def message(body: str, sender: str = "@you:test", **content):
    return {
        "type": "m.room.message",
        "sender": sender,
        "room_id": "!r:test",
        "content": {"msgtype": "m.text", "body": body, **content},
    }


def test_dot_separated_paths_unescape_dots():
    assert split_path("content.m\\.mentions.user_ids") == ("content", "m.mentions", "user_ids")
    assert split_path("a\\\\.b") == ("a\\", "b")


def test_default_rules_one_to_one_mention_notice_and_big_room():
    default = rules()
    one_to_one = evaluate(default, message("hi"), FACTS, None)
    assert summarize(one_to_one) == (True, False)
    assert {"set_tweak": "sound", "value": "default"} in one_to_one
    big = RoomFacts(5, {"@mod:test": 50}, 0, {})
    assert evaluate(default, message("hi"), big, None) == ("notify",)
    mention = message("hey", **{"m.mentions": {"user_ids": [ME]}})
    assert summarize(evaluate(default, mention, big, None)) == (True, True)
    notice = message("bot", msgtype="m.notice")
    notice["content"]["msgtype"] = "m.notice"
    assert summarize(evaluate(default, notice, big, None)) == (False, False)
    # @room needs the sender's power (notifications.room defaults to 50).
    room_ping = message("all", **{"m.mentions": {"room": True}})
    assert summarize(evaluate(default, room_ping, big, None)) == (True, False)
    room_ping["sender"] = "@mod:test"
    assert summarize(evaluate(default, room_ping, big, None)) == (True, True)


def test_master_rule_enabled_silences_everything():
    from atrium.storage.stores.push_rules import DefaultRuleOverride

    silenced = rules(overrides={("override", ".m.rule.master"): DefaultRuleOverride(True, None)})
    assert evaluate(silenced, message("hi"), FACTS, None) == ()


def test_conditions_event_match_glob_property_is_contains_display_name_member_count():
    custom = StoredPushRule(
        "override",
        "lunch",
        1,
        [
            {"kind": "event_match", "key": "content.body", "pattern": "lun?h*"},
            {"kind": "room_member_count", "is": ">=2"},
        ],
        ["notify", {"set_tweak": "highlight", "value": False}],
        None,
        True,
    )
    compiled = rules(custom)
    assert evaluate(compiled, message("Time for LUNCHEON!"), FACTS, None)[0] == "notify"
    # Word boundary: "xlunch" does not start at one; the default one_to_one rule answers.
    assert evaluate(compiled, message("xlunch"), FACTS, None)[-1] == {
        "set_tweak": "sound",
        "value": "default",
    }
    named = StoredPushRule(
        "override",
        "name",
        1,
        [{"kind": "contains_display_name"}],
        ["notify", {"set_tweak": "highlight"}],
        None,
        True,
    )
    compiled = rules(named)
    assert summarize(evaluate(compiled, message("ping Mr. Me!"), FACTS, "mr. me")) == (True, True)
    assert summarize(evaluate(compiled, message("ping Mr. Meow"), FACTS, "Mr. Me")) == (True, False)
    prop = StoredPushRule(
        "override",
        "prop",
        1,
        [{"kind": "event_property_is", "key": "content.n", "value": 1}],
        ["notify", {"set_tweak": "highlight"}],
        None,
        True,
    )
    compiled = rules(prop)
    assert summarize(evaluate(compiled, message("x", n=1), FACTS, None)) == (True, True)
    # No casting: true is not 1.
    assert summarize(evaluate(compiled, message("x", n=True), FACTS, None)) == (True, False)
    unknown = StoredPushRule("override", "u", 1, [{"kind": "future_kind"}], [], None, True)
    assert evaluate(rules(unknown), message("x"), FACTS, None)[0] == "notify"


def test_room_sender_and_content_rules_in_spec_order():
    room_rule = StoredPushRule("room", "!r:test", 1, [], [], None, True)
    sender_rule = StoredPushRule(
        "sender", "@you:test", 1, [], ["notify", {"set_tweak": "highlight"}], None, True
    )
    content_rule = StoredPushRule(
        "content", "c", 1, [], ["notify", {"set_tweak": "highlight"}], "cake", True
    )
    compiled = rules(room_rule, sender_rule, content_rule)
    # content outranks room, room outranks sender.
    assert summarize(evaluate(compiled, message("cake time"), FACTS, None)) == (True, True)
    assert evaluate(compiled, message("hello"), FACTS, None) == ()
    disabled = StoredPushRule("room", "!r:test", 1, [], [], None, False)
    assert summarize(evaluate(rules(disabled, sender_rule), message("hello"), FACTS, None)) == (
        True,
        True,
    )


def test_shared_evaluation_for_many_users_matches_per_user_evaluation():
    """evaluate_for_users (one ruleset compiled with the placeholder, shared by
    users) gives each user what evaluate gives with their own ruleset."""
    from atrium.push.evaluator import USER_PLACEHOLDER, evaluate_for_users

    users = ["@a:test", "@b:test", "@c:test"]
    named = StoredPushRule(
        "override",
        "name",
        1,
        [{"kind": "contains_display_name"}],
        ["notify", {"set_tweak": "highlight"}],
        None,
        True,
    )
    template = compile_ruleset(build_ruleset(USER_PLACEHOLDER, UserPushRules((named,), {})))
    names = {"@a:test": "Ann", "@c:test": "Cy"}
    events = [
        message("hello ann", **{"m.mentions": {"user_ids": ["@b:test"]}}),
        message("plain"),
        {
            "type": "m.room.member",
            "sender": "@x:test",
            "state_key": "@c:test",
            "room_id": "!r:test",
            "content": {"membership": "invite"},
        },
    ]
    for facts in (FACTS, RoomFacts(7, {}, 0, {})):
        for event in events:
            shared = evaluate_for_users(template, event, facts, users, names, {})
            for user in users:
                own = compile_ruleset(build_ruleset(user, UserPushRules((named,), {})))
                assert shared.get(user) == evaluate(own, event, facts, names.get(user)), (
                    user,
                    event,
                )
