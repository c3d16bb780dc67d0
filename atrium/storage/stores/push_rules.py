"""PushRulesStore: a user's own push rules and their changes to the
server-default rules.

The default rules themselves live in code (``atrium.handlers.push_rules``).
Every change also rewrites the user's ``m.push_rules`` account data marker
with a new account_data stream id in the same transaction, so /sync (which
follows the account_data stream) learns that the rules changed; the marker's
content is never read, the rules are computed when served.

Cached: ``get_push_rules_for_user(user)``, invalidated after every change of
that user's rules.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from atrium.storage.database import DatabasePool, Transaction
from atrium.storage.stores.account_data import AccountDataStore
from atrium.storage.stores.errors import NotFoundError
from atrium.storage.stores.invalidation import CacheInvalidator
from atrium.util.caches.descriptors import cached, cached_list

PUSH_RULES_TYPE = "m.push_rules"


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@attrs.frozen
class StoredPushRule:
    kind: str
    rule_id: str
    priority: int
    conditions: list[Any]
    actions: list[Any]
    pattern: str | None
    enabled: bool


@attrs.frozen
class DefaultRuleOverride:
    """A user's change to a server-default rule (None: unchanged)."""

    enabled: bool | None
    actions: list[Any] | None


@attrs.frozen
class UserPushRules:
    """A user's stored push rule data (shared by the cache: do not modify)."""

    # Most important first within each kind.
    rules: tuple[StoredPushRule, ...]
    # (kind, rule_id) -> override of a server-default rule.
    overrides: Mapping[tuple[str, str], DefaultRuleOverride]


class AnchorRuleNotFound(NotFoundError):
    """The rule named by ``before``/``after`` does not exist."""

    def __init__(self, rule_id: str) -> None:
        super().__init__(rule_id)
        self.rule_id = rule_id


class PushRulesStore:
    def __init__(
        self, db: DatabasePool, account_data: AccountDataStore, invalidator: CacheInvalidator
    ) -> None:
        self.db = db
        self.account_data = account_data
        self.invalidator = invalidator

    @cached(max_entries=50_000)
    async def get_push_rules_for_user(self, user_id: str) -> UserPushRules:
        return (await self._fetch_rules([user_id]))[user_id]

    @cached_list("get_push_rules_for_user", "user_ids")
    async def get_push_rules_for_users(self, user_ids: Collection[str]) -> dict[str, UserPushRules]:
        """user -> rules for many users (two statements per 500 users missing
        from the cache): what push evaluation of a big room needs at once."""
        return await self._fetch_rules(user_ids)

    async def _fetch_rules(self, user_ids: Collection[str]) -> dict[str, UserPushRules]:
        def txn_fn(txn: Transaction) -> dict[str, UserPushRules]:
            rules = txn.select_many(
                "SELECT user_id, kind, rule_id, priority, conditions, actions, pattern, enabled"
                " FROM push_rules WHERE {in}",
                "user_id",
                set(user_ids),
            )
            overrides = txn.select_many(
                "SELECT user_id, kind, rule_id, enabled, actions"
                " FROM push_rule_default_overrides WHERE {in}",
                "user_id",
                set(user_ids),
            )
            # Most important first within each kind (as ORDER BY kind, priority DESC, rule_id).
            rules.sort(key=lambda r: (r[1], -int(r[3]), r[2]))
            by_user: dict[str, list[StoredPushRule]] = {u: [] for u in user_ids}
            for r in rules:
                by_user[r[0]].append(
                    StoredPushRule(
                        r[1], r[2], int(r[3]), json.loads(r[4]), json.loads(r[5]), r[6], bool(r[7])
                    )
                )
            over: dict[str, dict[tuple[str, str], DefaultRuleOverride]] = {u: {} for u in user_ids}
            for r in overrides:
                over[r[0]][(r[1], r[2])] = DefaultRuleOverride(
                    None if r[3] is None else bool(r[3]),
                    None if r[4] is None else json.loads(r[4]),
                )
            return {
                u: UserPushRules(tuple(by_user[u]), MappingProxyType(over[u])) for u in user_ids
            }

        return await self.db.run_interaction("get_push_rules_for_users", txn_fn)

    # -- writes --------------------------------------------------------------------------
    async def _change(
        self, desc: str, user_id: str, fn: Callable[[Transaction], bool]
    ) -> int | None:
        """Run ``fn`` and, if it changed something (True), bump the m.push_rules marker.

        Returns the account_data position to publish, or None if nothing changed.
        """
        gen = self.account_data.id_gen

        def txn_fn(txn: Transaction, stream_id: int) -> bool:
            if not fn(txn):
                return False
            self.account_data.add_account_data_txn(
                txn, stream_id, user_id, None, PUSH_RULES_TYPE, "{}"
            )
            txn.call_after(self.invalidator.invalidate, "get_push_rules_for_user", [(user_id,)])
            return True

        with gen.get_next() as stream_id:
            changed = await self.db.run_interaction(desc, txn_fn, stream_id)
        return gen.get_current_token() if changed else None

    async def add_push_rule(
        self,
        user_id: str,
        kind: str,
        rule_id: str,
        conditions: list[Any],
        actions: list[Any],
        pattern: str | None,
        before: str | None = None,
        after: str | None = None,
    ) -> int:
        """Create or replace a user rule, placed per before/after (AnchorRuleNotFound)."""

        def fn(txn: Transaction) -> bool:
            rows = txn.select_all(
                "SELECT rule_id, enabled FROM push_rules WHERE user_id = ? AND kind = ?"
                " ORDER BY priority DESC, rule_id",
                (user_id, kind),
            )
            ordered = [r[0] for r in rows]
            enabled = {r[0]: bool(r[1]) for r in rows}
            exists = rule_id in enabled
            anchor = before if before is not None else after
            if anchor is not None:
                if anchor == rule_id or anchor not in enabled:
                    raise AnchorRuleNotFound(anchor)
                if exists:
                    ordered.remove(rule_id)
                index = ordered.index(anchor)
                ordered.insert(index if before is not None else index + 1, rule_id)
            elif not exists:
                # Spec: a new rule with no position is the most important of its kind.
                ordered.insert(0, rule_id)
            txn.upsert(
                "push_rules",
                {"user_id": user_id, "kind": kind, "rule_id": rule_id},
                {
                    "priority": 0,
                    "conditions": _dump(conditions),
                    "actions": _dump(actions),
                    "pattern": pattern,
                    # Spec: created rules are enabled; an update keeps the setting.
                    "enabled": enabled.get(rule_id, True),
                },
            )
            for position, rid in enumerate(ordered):
                txn.execute(
                    "UPDATE push_rules SET priority = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
                    (len(ordered) - position, user_id, kind, rid),
                )
            return True

        token = await self._change("add_push_rule", user_id, fn)
        assert token is not None
        return token

    async def delete_push_rule(self, user_id: str, kind: str, rule_id: str) -> int | None:
        """Delete a user rule; None if there was no such rule."""

        def fn(txn: Transaction) -> bool:
            txn.execute(
                "DELETE FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?",
                (user_id, kind, rule_id),
            )
            return txn.rowcount > 0

        return await self._change("delete_push_rule", user_id, fn)

    async def set_push_rule_enabled(
        self, user_id: str, kind: str, rule_id: str, enabled: bool, is_default: bool
    ) -> int | None:
        """Enable or disable a rule; None if a user rule of that ID does not exist."""

        def fn(txn: Transaction) -> bool:
            if is_default:
                self._upsert_override_txn(txn, user_id, kind, rule_id, "enabled", enabled)
                return True
            txn.execute(
                "UPDATE push_rules SET enabled = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
                (enabled, user_id, kind, rule_id),
            )
            return txn.rowcount > 0

        return await self._change("set_push_rule_enabled", user_id, fn)

    async def set_push_rule_actions(
        self, user_id: str, kind: str, rule_id: str, actions: list[Any], is_default: bool
    ) -> int | None:
        """Replace a rule's actions; None if a user rule of that ID does not exist."""

        def fn(txn: Transaction) -> bool:
            if is_default:
                self._upsert_override_txn(txn, user_id, kind, rule_id, "actions", _dump(actions))
                return True
            txn.execute(
                "UPDATE push_rules SET actions = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
                (_dump(actions), user_id, kind, rule_id),
            )
            return txn.rowcount > 0

        return await self._change("set_push_rule_actions", user_id, fn)

    @staticmethod
    def _upsert_override_txn(
        txn: Transaction, user_id: str, kind: str, rule_id: str, column: str, value: Any
    ) -> None:
        txn.upsert(
            "push_rule_default_overrides",
            {"user_id": user_id, "kind": kind, "rule_id": rule_id},
            {column: value},
        )
