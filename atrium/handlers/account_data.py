"""Account data and room tags (spec: client-server API "Client Config" and
"Room Tagging").

Users read and write only their own account data. Two types are managed by
the server and refused on the client write path with 405 M_BAD_JSON:
``m.fully_read`` (set through read markers) and ``m.push_rules`` (set
through the push rules API; its content is computed from the rules when
read). Tags are the room account data entry ``m.tag`` = {"tags": {...}}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from atrium.errors import BadJson, Forbidden, InvalidParam, MatrixError, NotFound
from atrium.events.validation import has_room_id_shape
from atrium.handlers.push_rules import PushRulesHandler
from atrium.handlers.typing import Publish
from atrium.replication.streams.account_data import AccountDataStreamRow
from atrium.storage.stores.account_data import AccountDataStore
from atrium.util.async_helpers import Linearizer

FULLY_READ = "m.fully_read"
PUSH_RULES = "m.push_rules"
TAG = "m.tag"
# Spec "Client Config", server behaviour: types the server manages.
SERVER_MANAGED_TYPES = frozenset({FULLY_READ, PUSH_RULES})
MAX_TAG_BYTES = 255
MAX_TYPE_LENGTH = 255


def check_room_id(room_id: str) -> None:
    """A room ID's grammar, loosely: ``!opaque:server`` or a v12 ``!hash`` (M_INVALID_PARAM otherwise)."""
    if not has_room_id_shape(room_id):
        raise InvalidParam(f"{room_id!r} is not a valid room ID")


class AccountDataHandler:
    def __init__(
        self,
        store: AccountDataStore,
        publish: Publish,
        push_rules: PushRulesHandler,
    ) -> None:
        self.store = store
        self._publish = publish
        # Computes the content of m.push_rules ({"global": ruleset}).
        self.push_rules = push_rules
        # Tag changes read, modify and write m.tag: one at a time per user.
        self._tag_lock = Linearizer("room_tags")

    # -- client API -----------------------------------------------------------------
    async def client_set(
        self,
        requester_user_id: str,
        user_id: str,
        room_id: str | None,
        data_type: str,
        content: dict[str, Any],
    ) -> None:
        """PUT .../account_data/{type}, with the spec's checks."""
        self._check_owner(requester_user_id, user_id)
        if room_id is not None:
            check_room_id(room_id)
        if not data_type or len(data_type) > MAX_TYPE_LENGTH:
            raise InvalidParam("Invalid account data type")
        if data_type in SERVER_MANAGED_TYPES:
            raise MatrixError(405, f"Cannot set {data_type} through this API", errcode="M_BAD_JSON")
        await self.add_account_data(user_id, room_id, data_type, content)

    async def client_get(
        self, requester_user_id: str, user_id: str, room_id: str | None, data_type: str
    ) -> Mapping[str, Any]:
        """GET .../account_data/{type}: 404 M_NOT_FOUND when unset."""
        self._check_owner(requester_user_id, user_id)
        if room_id is not None:
            check_room_id(room_id)
        if room_id is None and data_type == PUSH_RULES:
            return await self.push_rules.push_rules_content(user_id)
        content = await self.store.get_account_data_by_type(user_id, room_id, data_type)
        if content is None:
            raise NotFound(
                "Account data not found" if room_id is None else "Room account data not found"
            )
        return content

    @staticmethod
    def _check_owner(requester_user_id: str, user_id: str) -> None:
        if requester_user_id != user_id:
            raise Forbidden("Cannot access account data of other users")

    # -- server-side writes ------------------------------------------------------------
    async def add_account_data(
        self, user_id: str, room_id: str | None, data_type: str, content: Mapping[str, Any]
    ) -> int:
        """Store and announce one entry (no client checks); returns the stream position."""
        token = await self.store.add_account_data(user_id, room_id, data_type, content)
        await self._publish(
            "account_data", token, [AccountDataStreamRow(user_id, room_id, data_type)]
        )
        return token

    # -- tags -------------------------------------------------------------------------
    async def get_tags(self, requester_user_id: str, user_id: str, room_id: str) -> dict[str, Any]:
        self._check_owner(requester_user_id, user_id)
        check_room_id(room_id)
        return {"tags": await self._current_tags(user_id, room_id)}

    async def add_tag(
        self, requester_user_id: str, user_id: str, room_id: str, tag: str, content: dict[str, Any]
    ) -> None:
        self._check_owner(requester_user_id, user_id)
        check_room_id(room_id)
        _check_tag(tag)
        order = content.get("order")
        if "order" in content and (isinstance(order, bool) or not isinstance(order, (int, float))):
            raise BadJson("'order' must be a number")
        async with self._tag_lock.queue(user_id):
            tags = await self._current_tags(user_id, room_id)
            tags[tag] = dict(content)
            await self.add_account_data(user_id, room_id, TAG, {"tags": tags})

    async def remove_tag(
        self, requester_user_id: str, user_id: str, room_id: str, tag: str
    ) -> None:
        self._check_owner(requester_user_id, user_id)
        check_room_id(room_id)
        async with self._tag_lock.queue(user_id):
            tags = await self._current_tags(user_id, room_id)
            if tag not in tags:
                # Spec: removing is idempotent; nothing changes, nothing to announce.
                return
            del tags[tag]
            await self.add_account_data(user_id, room_id, TAG, {"tags": tags})

    async def _current_tags(self, user_id: str, room_id: str) -> dict[str, Any]:
        content = await self.store.get_account_data_by_type(user_id, room_id, TAG)
        tags = (content or {}).get("tags")
        if not isinstance(tags, Mapping):
            return {}
        return {k: dict(v) if isinstance(v, Mapping) else {} for k, v in tags.items()}


def _check_tag(tag: str) -> None:
    # Spec "Room Tagging": a tag name MUST NOT exceed 255 bytes.
    if not tag or len(tag.encode("utf-8")) > MAX_TAG_BYTES:
        raise InvalidParam("Tag names must be 1 to 255 bytes")
