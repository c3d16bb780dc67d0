"""The redaction algorithm of each room version (spec: rooms/vN "Redactions").

Works on plain event dicts so that hashing and signing (which redact before
computing the reference hash) need nothing but JSON.
"""

from __future__ import annotations

from typing import Any

from atrium.events.room_versions import RedactionRules, RoomVersion

_TOP_LEVEL_KEPT_V1 = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "prev_state",
        "auth_events",
        "origin",
        "origin_server_ts",
        "membership",
    }
)
# v11 no longer protects `origin`, `membership` and `prev_state`.
_TOP_LEVEL_KEPT_V11 = _TOP_LEVEL_KEPT_V1 - {"origin", "membership", "prev_state"}

_PL_KEYS = (
    "ban",
    "events",
    "events_default",
    "kick",
    "redact",
    "state_default",
    "users",
    "users_default",
)


def _content_keys(rules: RedactionRules, event_type: str) -> tuple[str, ...] | None:
    """Content keys kept for an event type; None means keep the whole content."""
    if event_type == "m.room.member":
        if rules >= RedactionRules.V9:
            return ("membership", "join_authorised_via_users_server")
        return ("membership",)
    if event_type == "m.room.create":
        return None if rules >= RedactionRules.V11 else ("creator",)
    if event_type == "m.room.join_rules":
        return ("join_rule", "allow") if rules >= RedactionRules.V8 else ("join_rule",)
    if event_type == "m.room.power_levels":
        return _PL_KEYS + ("invite",) if rules >= RedactionRules.V11 else _PL_KEYS
    if event_type == "m.room.aliases" and rules < RedactionRules.V6:
        return ("aliases",)
    if event_type == "m.room.history_visibility":
        return ("history_visibility",)
    if event_type == "m.room.redaction" and rules >= RedactionRules.V11:
        return ("redacts",)
    return ()


def prune_event_dict(room_version: RoomVersion, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Return a redacted copy of ``event_dict``; the input is not modified."""
    rules = room_version.redaction_rules
    kept_top = _TOP_LEVEL_KEPT_V11 if rules >= RedactionRules.V11 else _TOP_LEVEL_KEPT_V1
    pruned = {k: v for k, v in event_dict.items() if k in kept_top}

    event_type = event_dict.get("type")
    content = event_dict.get("content")
    if not isinstance(content, dict):
        content = {}
    keys = _content_keys(rules, event_type) if isinstance(event_type, str) else ()
    if keys is None:
        new_content = dict(content)
    else:
        new_content = {k: content[k] for k in keys if k in content}
    if (
        rules >= RedactionRules.V11
        and event_type == "m.room.member"
        and isinstance(content.get("third_party_invite"), dict)
        and "signed" in content["third_party_invite"]
    ):
        # v11: third_party_invite survives, holding only `signed`.
        new_content["third_party_invite"] = {"signed": content["third_party_invite"]["signed"]}
    pruned["content"] = new_content

    # `unsigned.age_ts` and `unsigned.replaces_state` are server bookkeeping
    # that survive redaction when serving events to clients.
    unsigned = event_dict.get("unsigned")
    if isinstance(unsigned, dict):
        kept_unsigned = {k: unsigned[k] for k in ("age_ts", "replaces_state") if k in unsigned}
        if kept_unsigned:
            pruned["unsigned"] = kept_unsigned
    return pruned
