"""The account_data stream: one row per changed account data entry (global
when room_id is None), including the m.push_rules marker that push rule
changes write. Applying a row drops the user's cached account data (and
push rules) and wakes that user's /sync."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from atrium.replication.streams import register_stream
from atrium.replication.streams._base import Effects, Stream, StreamRow, StreamUpdates

PUSH_RULES_TYPE = "m.push_rules"


@attrs.frozen
class AccountDataStreamRow(StreamRow):
    user_id: str
    room_id: str | None
    account_data_type: str


@register_stream
class AccountDataStream(Stream):
    NAME = "account_data"
    ROW_TYPE = AccountDataStreamRow
    TOKEN_KEY = "account_data"

    def current_token(self, instance_name: str) -> int:
        return self.hs.account_data_store.get_current_token()

    async def get_updates(
        self, instance_name: str, from_token: int, to_token: int, limit: int
    ) -> StreamUpdates:
        changes = await self.hs.account_data_store.get_all_updated_account_data(
            from_token, to_token, limit
        )
        rows: list[tuple[int, StreamRow]] = [
            (c.stream_id, AccountDataStreamRow(c.user_id, c.room_id, c.account_data_type))
            for c in changes
        ]
        limited = len(rows) == limit
        return StreamUpdates(rows, rows[-1][0] if limited else to_token, limited)

    async def effects(self, rows: Iterable[StreamRow]) -> Effects:
        effects = Effects()
        users: list[tuple[Any, ...]] = []
        push_rule_users: list[tuple[Any, ...]] = []
        for row in rows:
            assert isinstance(row, AccountDataStreamRow)
            effects.users.add(row.user_id)
            users.append((row.user_id,))
            if row.account_data_type == PUSH_RULES_TYPE:
                push_rule_users.append((row.user_id,))
        if users:
            effects.invalidations.append(("get_account_data_for_user", users))
        if push_rule_users:
            effects.invalidations.append(("get_push_rules_for_user", push_rule_users))
        return effects
