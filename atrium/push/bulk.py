"""Evaluating a batch of new events against the push rules of every local
user in their rooms (client-server API "Push Notifications"), on the events
writer, just before the batch is persisted: the resulting actions are
written in the same transaction as the events (``event_push_actions``).

Cheap by construction, whatever the room size: the room's joined users,
current state and power levels come from the members store's caches; every
user's rules come from one cached batch read (``get_push_rules_for_users``,
invalidated by replication when a user changes them) and are compiled once
per stored version; display names are loaded only for users one of whose
rules asks for them. No per-user statement runs.

Which events: accepted room events only — not outliers, not rejected, not
soft-failed, not backfilled (the caller skips those batches) — and never for
their sender. An invite is evaluated for its local invitee too (who is not
joined yet), so ``.m.rule.invite_for_me`` can fire.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from atrium.auth.power_levels import room_creators
from atrium.events.event import Event
from atrium.handlers.push_rules import build_ruleset
from atrium.push.evaluator import (
    USER_PLACEHOLDER,
    CompiledRule,
    RoomFacts,
    compile_ruleset,
    evaluate_for_users,
    summarize,
    uses_display_name,
)
from atrium.state.context import EventContext
from atrium.storage.stores.events import EventsStore
from atrium.storage.stores.push_rules import PushRulesStore, UserPushRules
from atrium.storage.stores.roommember import MEMBER, RoomMemberStore

# Compiled rulesets kept (one per user seen); dropped wholesale beyond this.
_MAX_COMPILED = 100_000


@attrs.frozen(slots=True)
class PushAction:
    """One user's outcome for one event: stored when it notifies or highlights."""

    user_id: str
    actions_json: str
    notify: bool
    highlight: bool


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return default
    return default


class BulkPushRuleEvaluator:
    def __init__(
        self,
        members: RoomMemberStore,
        events: EventsStore,
        push_rules: PushRulesStore,
        is_mine: Callable[[str], bool],
    ) -> None:
        self.members = members
        self.events = events
        self.push_rules = push_rules
        self.is_mine = is_mine
        # user -> (the stored rules it was compiled from, compiled rules). The
        # stored object is the cache's: a new object means the rules changed.
        # Rules are compiled with USER_PLACEHOLDER for the user's ID, and
        # identical rulesets are one shared object (``_shared``): every user
        # on the default rules evaluates together.
        self._compiled: dict[str, tuple[UserPushRules, tuple[CompiledRule, ...]]] = {}
        self._shared: dict[str, tuple[CompiledRule, ...]] = {}

    async def actions_for_batch(
        self, items: Sequence[tuple[Event, EventContext]]
    ) -> dict[str, list[PushAction]]:
        """event ID -> the actions to store for it (only events with some)."""
        out: dict[str, list[PushAction]] = {}
        facts_by_room: dict[str, tuple[RoomFacts, frozenset[str], Mapping[Any, str]]] = {}
        for event, context in items:
            meta = event.internal_metadata
            if meta.outlier or meta.soft_failed or context.rejected or event.rejected_reason:
                continue
            room_id = event.room_id
            if room_id not in facts_by_room:
                facts_by_room[room_id] = await self._room_facts(room_id)
            facts, joined, state = facts_by_room[room_id]
            users = [u for u in joined if self.is_mine(u) and u != event.sender]
            if (
                event.type == MEMBER
                and event.membership == "invite"
                and event.state_key is not None
                and event.state_key != event.sender
                and event.state_key not in joined
                and self.is_mine(event.state_key)
            ):
                users.append(event.state_key)
            if not users:
                continue
            actions = await self._evaluate(event, users, facts, state)
            if actions:
                out[event.event_id] = actions
        return out

    async def _room_facts(
        self, room_id: str
    ) -> tuple[RoomFacts, frozenset[str], Mapping[Any, str]]:
        joined = await self.members.get_users_in_room(room_id)
        state = await self.members.get_current_state_ids(room_id)
        content: Mapping[str, Any] = {}
        pl_id = state.get(("m.room.power_levels", ""))
        if pl_id is not None:
            pl_event = await self.events.get_event(pl_id, allow_none=True)
            if pl_event is not None:
                content = pl_event.content
        users = content.get("users")
        notifications = content.get("notifications")
        create_id = state.get(("m.room.create", ""))
        create = await self.events.get_event(create_id, allow_none=True) if create_id else None
        if pl_id is None:
            # Spec m.room.power_levels: without the event, the creator has 100.
            creator = create.content.get("creator", create.sender) if create else None
            user_levels = {creator: 100} if isinstance(creator, str) else {}
        else:
            user_levels = {
                u: _int(v, 0) for u, v in (users.items() if isinstance(users, dict) else ())
            }
        if create is not None and create.room_version.privileged_creators:
            # rooms/v12: creators are never listed; their level is infinite.
            user_levels.update(dict.fromkeys(room_creators(create), math.inf))
        facts = RoomFacts(
            member_count=len(joined),
            user_levels=user_levels,
            users_default=_int(content.get("users_default"), 0),
            notification_levels={
                k: _int(v, 50)
                for k, v in (notifications.items() if isinstance(notifications, dict) else ())
            },
        )
        return facts, joined, state

    async def _evaluate(
        self, event: Event, users: list[str], facts: RoomFacts, state: Mapping[Any, str]
    ) -> list[PushAction]:
        stored = await self.push_rules.get_push_rules_for_users(users)
        groups: dict[int, tuple[tuple[CompiledRule, ...], list[str]]] = {}
        for user_id in users:
            rules = self._rules_for(user_id, stored[user_id])
            group = groups.get(id(rules))
            if group is None:
                groups[id(rules)] = (rules, [user_id])
            else:
                group[1].append(user_id)
        need_names = [
            u for rules, members in groups.values() if uses_display_name(rules) for u in members
        ]
        names = await self._display_names(need_names, state) if need_names else {}
        event_dict = event.as_dict_ref()
        memo: dict[str, bool] = {}
        out: list[PushAction] = []
        # id(actions) -> (JSON text, notify, highlight); text None: nothing to store.
        encoded: dict[int, tuple[str | None, bool, bool]] = {}
        for rules, members in groups.values():
            results = evaluate_for_users(rules, event_dict, facts, members, names, memo)
            for user_id, actions in results.items():
                summary = encoded.get(id(actions))
                if summary is None:
                    notify, highlight = summarize(actions)
                    text = None
                    if notify or highlight:
                        text = json.dumps(list(actions), separators=(",", ":"), ensure_ascii=False)
                    summary = encoded[id(actions)] = (text, notify, highlight)
                if summary[0] is not None:
                    out.append(PushAction(user_id, summary[0], summary[1], summary[2]))
        return out

    def _rules_for(self, user_id: str, stored: UserPushRules) -> tuple[CompiledRule, ...]:
        entry = self._compiled.get(user_id)
        if entry is not None and entry[0] is stored:
            return entry[1]
        if len(self._compiled) >= _MAX_COMPILED:
            self._compiled.clear()
            self._shared.clear()
        ruleset = build_ruleset(USER_PLACEHOLDER, stored)
        signature = json.dumps(ruleset, sort_keys=True, default=str)
        rules = self._shared.get(signature)
        if rules is None:
            rules = self._shared[signature] = compile_ruleset(ruleset)
        self._compiled[user_id] = (stored, rules)
        return rules

    async def _display_names(self, user_ids: list[str], state: Mapping[Any, str]) -> dict[str, str]:
        ids = {u: state[(MEMBER, u)] for u in user_ids if (MEMBER, u) in state}
        events = await self.events.get_events(ids.values())
        names: dict[str, str] = {}
        for user_id, event_id in ids.items():
            member = events.get(event_id)
            name = member.content.get("displayname") if member is not None else None
            if isinstance(name, str) and name:
                names[user_id] = name
        return names
