"""Push rules (spec: client-server API "Push Rules", "Predefined Rules",
"Push Rules: API").

A user's ruleset is the server-default rules (defined here, with the user's
ID filled in and the user's enabled/actions changes applied) merged with the
user's own rules: ``.m.rule.master`` first, then user rules before the
server-default rules of each kind. Every change is announced as the
``m.push_rules`` account data entry, which /sync carries to clients.
"""

from __future__ import annotations

import copy
from typing import Any

from atrium.errors import BadJson, InvalidParam, MissingParam, NotFound, Unknown
from atrium.handlers.typing import Publish
from atrium.replication.streams.account_data import PUSH_RULES_TYPE, AccountDataStreamRow
from atrium.storage.stores.push_rules import AnchorRuleNotFound, PushRulesStore, UserPushRules

KINDS = ("override", "content", "room", "sender", "underride")
_USER_ID = "[the user's Matrix ID]"


def _rule(rule_id: str, conditions: list[Any], actions: list[Any], enabled: bool = True) -> dict:
    return {
        "rule_id": rule_id,
        "default": True,
        "enabled": enabled,
        "conditions": conditions,
        "actions": actions,
    }


def _match(key: str, pattern: str) -> dict[str, Any]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


_SOUND_DEFAULT = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT = {"set_tweak": "highlight"}

# Spec "Default Override Rules", in the spec's order. ".m.rule.master" is
# kept apart: it outranks even user-defined override rules.
MASTER_RULE = _rule(".m.rule.master", [], [], enabled=False)
DEFAULT_OVERRIDE_RULES: list[dict[str, Any]] = [
    _rule(".m.rule.suppress_notices", [_match("content.msgtype", "m.notice")], []),
    _rule(
        ".m.rule.invite_for_me",
        [
            _match("type", "m.room.member"),
            _match("content.membership", "invite"),
            _match("state_key", _USER_ID),
        ],
        ["notify", _SOUND_DEFAULT],
    ),
    _rule(".m.rule.member_event", [_match("type", "m.room.member")], []),
    _rule(
        ".m.rule.is_user_mention",
        [
            {
                "kind": "event_property_contains",
                "key": "content.m\\.mentions.user_ids",
                "value": _USER_ID,
            }
        ],
        ["notify", _SOUND_DEFAULT, _HIGHLIGHT],
    ),
    _rule(
        ".m.rule.is_room_mention",
        [
            {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
            {"kind": "sender_notification_permission", "key": "room"},
        ],
        ["notify", _HIGHLIGHT],
    ),
    _rule(
        ".m.rule.tombstone",
        [_match("type", "m.room.tombstone"), _match("state_key", "")],
        ["notify", _HIGHLIGHT],
    ),
    _rule(".m.rule.reaction", [_match("type", "m.reaction")], []),
    _rule(
        ".m.rule.room.server_acl",
        [_match("type", "m.room.server_acl"), _match("state_key", "")],
        [],
    ),
    _rule(
        ".m.rule.suppress_edits",
        [
            {
                "kind": "event_property_is",
                "key": "content.m\\.relates_to.rel_type",
                "value": "m.replace",
            }
        ],
        [],
    ),
]
# Spec "Default Underride Rules", in the spec's order.
DEFAULT_UNDERRIDE_RULES: list[dict[str, Any]] = [
    _rule(
        ".m.rule.call",
        [_match("type", "m.call.invite")],
        ["notify", {"set_tweak": "sound", "value": "ring"}],
    ),
    _rule(
        ".m.rule.encrypted_room_one_to_one",
        [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.encrypted")],
        ["notify", _SOUND_DEFAULT],
    ),
    _rule(
        ".m.rule.room_one_to_one",
        [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.message")],
        ["notify", _SOUND_DEFAULT],
    ),
    _rule(".m.rule.message", [_match("type", "m.room.message")], ["notify"]),
    _rule(".m.rule.encrypted", [_match("type", "m.room.encrypted")], ["notify"]),
]
# v1.17 removed the body-matching legacy content rules: no default content rules.
DEFAULT_RULE_IDS: dict[str, frozenset[str]] = {
    "override": frozenset(
        [MASTER_RULE["rule_id"]] + [r["rule_id"] for r in DEFAULT_OVERRIDE_RULES]
    ),
    "underride": frozenset(r["rule_id"] for r in DEFAULT_UNDERRIDE_RULES),
    "content": frozenset(),
    "room": frozenset(),
    "sender": frozenset(),
}


def _fill_user(value: Any, user_id: str) -> Any:
    if value == _USER_ID:
        return user_id
    if isinstance(value, list):
        return [_fill_user(v, user_id) for v in value]
    if isinstance(value, dict):
        return {k: _fill_user(v, user_id) for k, v in value.items()}
    return value


def build_ruleset(user_id: str, stored: UserPushRules) -> dict[str, list[dict[str, Any]]]:
    """The user's whole global ruleset, most important rule first in each kind."""

    def default(kind: str, rule: dict[str, Any]) -> dict[str, Any]:
        out = _fill_user(copy.deepcopy(rule), user_id)
        override = stored.overrides.get((kind, rule["rule_id"]))
        if override is not None:
            if override.enabled is not None:
                out["enabled"] = override.enabled
            if override.actions is not None:
                out["actions"] = copy.deepcopy(override.actions)
        return out

    ruleset: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    ruleset["override"].append(default("override", MASTER_RULE))
    for rule in stored.rules:
        out: dict[str, Any] = {
            "rule_id": rule.rule_id,
            "default": False,
            "enabled": rule.enabled,
            "actions": copy.deepcopy(rule.actions),
        }
        if rule.kind in ("override", "underride"):
            out["conditions"] = copy.deepcopy(rule.conditions)
        if rule.kind == "content" and rule.pattern is not None:
            out["pattern"] = rule.pattern
        ruleset[rule.kind].append(out)
    ruleset["override"].extend(default("override", r) for r in DEFAULT_OVERRIDE_RULES)
    ruleset["underride"].extend(default("underride", r) for r in DEFAULT_UNDERRIDE_RULES)
    return ruleset


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InvalidParam(f"Unknown push rule kind {kind!r}")


def validate_actions(actions: Any) -> list[Any]:
    """Actions are strings (notify, or the historical dont_notify/coalesce) or tweak objects."""
    if not isinstance(actions, list):
        raise BadJson("'actions' must be a list")
    for action in actions:
        if isinstance(action, str):
            if action not in ("notify", "dont_notify", "coalesce"):
                raise BadJson(f"Unknown push rule action {action!r}")
        elif isinstance(action, dict):
            if not isinstance(action.get("set_tweak"), str):
                raise BadJson("Action objects must have a 'set_tweak' string")
        else:
            raise BadJson("Push rule actions must be strings or objects")
    return actions


def _validate_conditions(conditions: Any) -> list[Any]:
    if not isinstance(conditions, list):
        raise BadJson("'conditions' must be a list")
    for condition in conditions:
        if not isinstance(condition, dict) or not isinstance(condition.get("kind"), str):
            raise BadJson("Each condition must be an object with a 'kind' string")
    return conditions


class PushRulesHandler:
    def __init__(self, store: PushRulesStore, publish: Publish) -> None:
        self.store = store
        self._publish = publish

    async def _announce(self, user_id: str, token: int) -> None:
        """Publish the m.push_rules account data change the store wrote with the rules."""
        await self._publish(
            "account_data", token, [AccountDataStreamRow(user_id, None, PUSH_RULES_TYPE)]
        )

    async def get_ruleset(self, user_id: str) -> dict[str, list[dict[str, Any]]]:
        return build_ruleset(user_id, await self.store.get_push_rules_for_user(user_id))

    async def push_rules_content(self, user_id: str) -> dict[str, Any]:
        """The content of the user's m.push_rules account data event."""
        return {"global": await self.get_ruleset(user_id)}

    async def get_rule(self, user_id: str, kind: str, rule_id: str) -> dict[str, Any]:
        check_kind(kind)
        for rule in (await self.get_ruleset(user_id))[kind]:
            if rule["rule_id"] == rule_id:
                return rule
        raise NotFound("The push rule was not found")

    async def set_rule(
        self,
        user_id: str,
        kind: str,
        rule_id: str,
        body: dict[str, Any],
        before: str | None,
        after: str | None,
    ) -> None:
        """PUT /pushrules/global/{kind}/{ruleId}: create or update a user rule."""
        check_kind(kind)
        if not rule_id or rule_id.startswith(".") or "/" in rule_id or "\\" in rule_id:
            raise InvalidParam("rule_id may not start with '.' or contain slashes")
        for anchor in (before, after):
            if anchor is not None and anchor.startswith("."):
                raise Unknown("Cannot place a rule relative to a server-default rule")
        if "actions" not in body:
            raise MissingParam("Missing 'actions'")
        actions = validate_actions(body["actions"])
        conditions: list[Any] = []
        pattern: str | None = None
        if kind in ("override", "underride"):
            conditions = _validate_conditions(body.get("conditions", []))
        elif kind == "content":
            pattern = body.get("pattern")
            if not isinstance(pattern, str):
                raise MissingParam("Content rules need a 'pattern' string")
        elif kind == "room" and not rule_id.startswith("!"):
            raise InvalidParam("The rule_id of a room rule is the room ID")
        elif kind == "sender" and not rule_id.startswith("@"):
            raise InvalidParam("The rule_id of a sender rule is the user ID")
        try:
            token = await self.store.add_push_rule(
                user_id, kind, rule_id, conditions, actions, pattern, before, after
            )
        except AnchorRuleNotFound as e:
            raise Unknown(f"before/after rule not found: {e.rule_id}") from None
        await self._announce(user_id, token)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> None:
        check_kind(kind)
        if rule_id in DEFAULT_RULE_IDS[kind]:
            raise InvalidParam("Server-default rules cannot be deleted")
        token = await self.store.delete_push_rule(user_id, kind, rule_id)
        if token is None:
            raise NotFound("The push rule was not found")
        await self._announce(user_id, token)

    async def set_enabled(self, user_id: str, kind: str, rule_id: str, enabled: Any) -> None:
        check_kind(kind)
        if not isinstance(enabled, bool):
            raise BadJson("'enabled' must be a boolean")
        is_default = rule_id in DEFAULT_RULE_IDS[kind]
        token = await self.store.set_push_rule_enabled(user_id, kind, rule_id, enabled, is_default)
        if token is None:
            raise NotFound("The push rule was not found")
        await self._announce(user_id, token)

    async def set_actions(self, user_id: str, kind: str, rule_id: str, actions: Any) -> None:
        check_kind(kind)
        actions = validate_actions(actions)
        is_default = rule_id in DEFAULT_RULE_IDS[kind]
        token = await self.store.set_push_rule_actions(user_id, kind, rule_id, actions, is_default)
        if token is None:
            raise NotFound("The push rule was not found")
        await self._announce(user_id, token)
