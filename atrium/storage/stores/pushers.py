"""PusherStore: the pushers table (client-server API "Push notifications").

No stream follows pushers and nothing caches them, so any process may write
them; the process sending pushes (atrium/push/http_pusher.py) reads the
whole table each time it looks for work, and records per pusher how far it
has sent (``last_stream_ordering``).
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from atrium.storage.database import DatabasePool, Transaction
from atrium.storage.stores.invalidation import CacheInvalidator


@attrs.frozen
class Pusher:
    app_id: str
    pushkey: str
    kind: str
    app_display_name: str
    device_display_name: str
    profile_tag: str | None
    lang: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "app_id": self.app_id,
            "pushkey": self.pushkey,
            "kind": self.kind,
            "app_display_name": self.app_display_name,
            "device_display_name": self.device_display_name,
            "lang": self.lang,
            "data": self.data,
        }
        if self.profile_tag is not None:
            out["profile_tag"] = self.profile_tag
        return out


@attrs.frozen
class StoredPusher:
    """A pusher as the sender sees it: whose, when added, how far sent."""

    user_id: str
    pusher: Pusher
    ts_added_ms: int
    last_stream_ordering: int | None


_COLUMNS = "app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data"


# Cache name announced (over the caches stream) when pushers are set or
# deleted: the process sending pushes re-reads them only then.
PUSHERS_CHANGED = "pushers_changed"


class PusherStore:
    def __init__(self, db: DatabasePool, invalidator: CacheInvalidator) -> None:
        self.db = db
        self.invalidator = invalidator

    async def get_pushers(self, user_id: str) -> list[Pusher]:
        rows = await self.db.execute(
            "get_pushers",
            f"SELECT {_COLUMNS} FROM pushers WHERE user_id = ? ORDER BY app_id, pushkey",
            user_id,
        )
        return [Pusher(*r[:7], json.loads(r[7])) for r in rows]

    async def get_all_http_pushers(self) -> list[StoredPusher]:
        rows = await self.db.execute(
            "get_all_http_pushers",
            f"SELECT user_id, ts_added_ms, last_stream_ordering, {_COLUMNS} FROM pushers"
            " WHERE kind = 'http'",
        )
        return [
            StoredPusher(
                r[0],
                Pusher(*r[3:10], json.loads(r[10])),
                int(r[1]),
                None if r[2] is None else int(r[2]),
            )
            for r in rows
        ]

    async def set_last_stream_ordering(
        self, user_id: str, app_id: str, pushkey: str, stream_ordering: int
    ) -> None:
        await self.db.execute(
            "set_pusher_last_stream_ordering",
            "UPDATE pushers SET last_stream_ordering = ?"
            " WHERE user_id = ? AND app_id = ? AND pushkey = ?",
            stream_ordering,
            user_id,
            app_id,
            pushkey,
        )

    async def set_pusher(
        self, user_id: str, pusher: Pusher, append: bool, ts: int, position: int = 0
    ) -> None:
        """Create or replace the user's pusher for (app_id, pushkey); unless
        ``append``, other users' pushers with the same pair are removed. A new
        pusher starts sending after events ``position``; a replaced one keeps
        its progress."""

        def txn_fn(txn: Transaction) -> None:
            if not append:
                txn.execute(
                    "DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id <> ?",
                    (pusher.app_id, pusher.pushkey, user_id),
                )
            txn.upsert(
                "pushers",
                {"user_id": user_id, "app_id": pusher.app_id, "pushkey": pusher.pushkey},
                {
                    "kind": pusher.kind,
                    "app_display_name": pusher.app_display_name,
                    "device_display_name": pusher.device_display_name,
                    "profile_tag": pusher.profile_tag,
                    "lang": pusher.lang,
                    "data": json.dumps(pusher.data),
                    "ts_added_ms": ts,
                },
            )
            txn.execute(
                "UPDATE pushers SET last_stream_ordering = ? WHERE user_id = ? AND app_id = ?"
                " AND pushkey = ? AND last_stream_ordering IS NULL",
                (position, user_id, pusher.app_id, pusher.pushkey),
            )

        await self.db.run_interaction("set_pusher", txn_fn)
        self.invalidator.invalidate(PUSHERS_CHANGED, None)

    async def delete_pusher(self, user_id: str, app_id: str, pushkey: str) -> None:
        await self.db.execute(
            "delete_pusher",
            "DELETE FROM pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?",
            user_id,
            app_id,
            pushkey,
        )
        self.invalidator.invalidate(PUSHERS_CHANGED, None)
