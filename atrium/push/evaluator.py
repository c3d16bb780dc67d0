"""Push rule evaluation for one event and one user (client-server API,
"Push Rules": conditions, "Predefined Rules", "Actions").

Pure functions over plain data so that evaluating one event for many users
costs no I/O: the caller gathers the room facts once (``RoomFacts``) and
compiles each user's ruleset once (``compile_ruleset``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import attrs

# Spec "Push Rules": evaluation order of the kinds.
_KIND_ORDER = ("override", "content", "room", "sender", "underride")
_MAX_SAFE_INT = 2**53 - 1


@attrs.frozen(slots=True)
class RoomFacts:
    """What the conditions need to know about the room, once per event."""

    member_count: int
    # user ID -> power level; users_default for others (m.room.power_levels).
    user_levels: Mapping[str, int | float]  # v12 creators: math.inf
    users_default: int
    # notifications key (e.g. "room") -> level needed (default 50).
    notification_levels: Mapping[str, int]

    def sender_may_notify(self, sender: str, key: str) -> bool:
        needed = self.notification_levels.get(key, 50)
        return self.user_levels.get(sender, self.users_default) >= needed


# Stands for the user whose rules are evaluated (as in the spec's rule
# definitions): rulesets compiled with it are shared by every user whose
# rules are the same apart from their own ID.
USER_PLACEHOLDER = "[the user's Matrix ID]"


@attrs.frozen(slots=True)
class CompiledRule:
    rule_id: str
    conditions: tuple[dict[str, Any], ...]
    actions: tuple[Any, ...]
    # Per condition: a key that identifies it (its results are shared by
    # every user within one event), and whether it depends on the user
    # (names the user placeholder, or their display name).
    keys: tuple[str, ...] = ()
    dependent: tuple[bool, ...] = ()

    @classmethod
    def make(
        cls, rule_id: str, conditions: tuple[dict[str, Any], ...], actions: tuple[Any, ...]
    ) -> CompiledRule:
        keys = tuple(json.dumps(c, sort_keys=True, default=str) for c in conditions)
        dependent = tuple(
            c.get("kind") == "contains_display_name" or USER_PLACEHOLDER in c.values()
            for c in conditions
        )
        return cls(rule_id, conditions, actions, keys, dependent)


def compile_ruleset(ruleset: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[CompiledRule, ...]:
    """A ruleset (``build_ruleset``) as one list in evaluation order,
    enabled rules only, content/room/sender rules turned into conditions."""
    out: list[CompiledRule] = []
    for kind in _KIND_ORDER:
        for rule in ruleset.get(kind, ()):
            if not rule.get("enabled", True):
                continue
            rule_id = rule["rule_id"]
            if kind in ("override", "underride"):
                conditions = tuple(rule.get("conditions") or ())
            elif kind == "content":
                pattern = rule.get("pattern")
                if not isinstance(pattern, str):
                    continue
                conditions = ({"kind": "event_match", "key": "content.body", "pattern": pattern},)
            elif kind == "room":
                conditions = ({"kind": "_room_id", "value": rule_id},)
            else:
                conditions = ({"kind": "_sender", "value": rule_id},)
            out.append(CompiledRule.make(rule_id, conditions, tuple(rule.get("actions") or ())))
    return tuple(out)


def uses_display_name(rules: Sequence[CompiledRule]) -> bool:
    return any(c.get("kind") == "contains_display_name" for r in rules for c in r.conditions)


def split_path(key: str) -> tuple[str, ...]:
    """Spec appendix "Dot-separated property paths": ``\\.`` is a literal dot."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(key)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            if nxt in (".", "\\"):
                current.append(nxt)
            else:
                current.append("\\" + nxt)
        elif ch == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return tuple(parts)


_MISSING = object()


def lookup(event: Mapping[str, Any], key: str) -> Any:
    value: Any = event
    for part in _split_cached(key):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


@lru_cache(maxsize=4096)
def _split_cached(key: str) -> tuple[str, ...]:
    return split_path(key)


@lru_cache(maxsize=4096)
def _glob(pattern: str, word_boundary: bool, literal: bool = False) -> re.Pattern[str]:
    """Spec "event_match": ``*`` any run of characters, ``?`` one, case-insensitive."""
    if literal:
        body = re.escape(pattern)
    else:
        body = "".join(
            ".*?" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern
        )
    if word_boundary:
        # For content.body: any substring starting and ending at a word
        # boundary ([A-Za-z0-9_] are the word characters).
        return re.compile(rf"(?<![A-Za-z0-9_]){body}(?![A-Za-z0-9_])", re.I | re.S)
    return re.compile(rf"\A{body}\Z", re.I | re.S)


def _scalar(value: Any) -> bool:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    return isinstance(value, int) and -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT


def _same(a: Any, b: Any) -> bool:
    # Do not cast: true is not 1.
    return type(a) is type(b) and a == b


_COUNT_RE = re.compile(r"^(==|<=|>=|<|>)?([0-9]+)$")


def _member_count_matches(spec: Any, count: int) -> bool:
    if not isinstance(spec, str):
        return False
    m = _COUNT_RE.match(spec)
    if m is None:
        return False
    op, number = m.group(1) or "==", int(m.group(2))
    return {
        "==": count == number,
        "<": count < number,
        ">": count > number,
        "<=": count <= number,
        ">=": count >= number,
    }[op]


def _display_name_in(body: Any, name: str | None) -> bool:
    if not name or not isinstance(body, str):
        return False
    return _glob(name, True, literal=True).search(body) is not None


def condition_matches(
    condition: Mapping[str, Any],
    event: Mapping[str, Any],
    facts: RoomFacts,
    display_name: str | None,
) -> bool:
    kind = condition.get("kind")
    if kind == "event_match":
        key, pattern = condition.get("key"), condition.get("pattern")
        if not isinstance(key, str) or not isinstance(pattern, str):
            return False
        value = lookup(event, key)
        if not isinstance(value, str):
            return False
        return _glob(pattern, key == "content.body").search(value) is not None
    if kind == "event_property_is":
        key = condition.get("key")
        if not isinstance(key, str):
            return False
        value = lookup(event, key)
        return value is not _MISSING and _scalar(value) and _same(value, condition.get("value"))
    if kind == "event_property_contains":
        key = condition.get("key")
        if not isinstance(key, str):
            return False
        value = lookup(event, key)
        if not isinstance(value, list):
            return False
        wanted = condition.get("value")
        return any(_scalar(v) and _same(v, wanted) for v in value)
    if kind == "contains_display_name":
        return _display_name_in(lookup(event, "content.body"), display_name)
    if kind == "room_member_count":
        return _member_count_matches(condition.get("is"), facts.member_count)
    if kind == "sender_notification_permission":
        key = condition.get("key")
        return isinstance(key, str) and facts.sender_may_notify(str(event.get("sender")), key)
    if kind == "_room_id":
        return event.get("room_id") == condition.get("value")
    if kind == "_sender":
        return event.get("sender") == condition.get("value")
    # Spec: unknown condition kinds never match.
    return False


def evaluate(
    rules: Sequence[CompiledRule],
    event: Mapping[str, Any],
    facts: RoomFacts,
    display_name: str | None,
) -> tuple[Any, ...] | None:
    """The actions of the first matching rule, or None when none matches."""
    for rule in rules:
        if all(condition_matches(c, event, facts, display_name) for c in rule.conditions):
            return rule.actions
    return None


def evaluate_for_users(
    rules: Sequence[CompiledRule],
    event: Mapping[str, Any],
    facts: RoomFacts,
    users: Iterable[str],
    display_names: Mapping[str, str],
    memo: dict[str, bool],
) -> dict[str, tuple[Any, ...]]:
    """``evaluate`` for many users sharing one ruleset compiled with
    ``USER_PLACEHOLDER``: user -> actions of their first matching rule.

    A rule's user-independent conditions are evaluated once (and remembered
    in ``memo`` for the other rulesets of this event); only when they all
    hold are its user-dependent ones checked per user.
    """
    remaining = list(users)
    out: dict[str, tuple[Any, ...]] = {}
    values: dict[str, Any] = {}
    for rule in rules:
        if not remaining:
            break
        holds = True
        for condition, key, dependent in zip(
            rule.conditions, rule.keys, rule.dependent, strict=True
        ):
            if dependent:
                continue
            result = memo.get(key)
            if result is None:
                result = memo[key] = condition_matches(condition, event, facts, None)
            if not result:
                holds = False
                break
        if not holds:
            continue
        if not any(rule.dependent):
            for user_id in remaining:
                out[user_id] = rule.actions
            remaining = []
            break
        still = []
        for user_id in remaining:
            if all(
                _dependent_matches(c, event, facts, user_id, display_names.get(user_id), values)
                for c, dep in zip(rule.conditions, rule.dependent, strict=True)
                if dep
            ):
                out[user_id] = rule.actions
            else:
                still.append(user_id)
        remaining = still
    return out


def _dependent_matches(
    condition: Mapping[str, Any],
    event: Mapping[str, Any],
    facts: RoomFacts,
    user_id: str,
    display_name: str | None,
    values: dict[str, Any],
) -> bool:
    """A user-dependent condition for one user; ``values`` remembers, per
    event, what the placeholder conditions compare the user's ID with."""
    kind = condition.get("kind")
    key = condition.get("key")
    if kind == "event_property_contains" and condition.get("value") == USER_PLACEHOLDER:
        # The default mention rule: one look-up per event, then a set test per user.
        memo_key = "contains\0" + str(key)
        found = values.get(memo_key, _MISSING)
        if found is _MISSING:
            value = lookup(event, key) if isinstance(key, str) else _MISSING
            found = values[memo_key] = (
                frozenset(v for v in value if isinstance(v, str))
                if isinstance(value, list)
                else frozenset()
            )
        return user_id in found
    if kind == "event_match" and condition.get("pattern") == USER_PLACEHOLDER:
        memo_key = "match\0" + str(key)
        found = values.get(memo_key, _MISSING)
        if found is _MISSING:
            value = lookup(event, key) if isinstance(key, str) else _MISSING
            found = values[memo_key] = value.lower() if isinstance(value, str) else None
        return found is not None and found == user_id.lower()
    filled = {k: (user_id if v == USER_PLACEHOLDER else v) for k, v in condition.items()}
    return condition_matches(filled, event, facts, display_name)


def summarize(actions: Sequence[Any]) -> tuple[bool, bool]:
    """(notify, highlight): spec "Actions" (highlight's value defaults to true)."""
    notify = "notify" in actions
    highlight = False
    for action in actions:
        if isinstance(action, Mapping) and action.get("set_tweak") == "highlight":
            highlight = action.get("value", True) is True
    return notify, highlight
