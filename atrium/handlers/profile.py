"""Profiles: display name and avatar URL (spec: client-server API
"Profiles").

Only local users have profiles here (no federation yet). After a change the
user's membership in every room they are joined to is re-sent as a join
carrying the new profile (spec "Events on Change of Profile Information"),
so other members see the new name.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from atrium.errors import BadJson, Forbidden, InvalidParam, MatrixError, MissingParam, NotFound
from atrium.storage.stores.accounts import AccountStore
from atrium.storage.stores.roommember import RoomMemberStore

logger = logging.getLogger(__name__)

PROFILE_FIELDS = ("displayname", "avatar_url")
MAX_DISPLAYNAME_LENGTH = 256
MAX_AVATAR_URL_LENGTH = 1000
# Spec: keyName grammar (avatar_url, displayname, m.tz or a namespaced identifier).
_KEY_NAME = re.compile(r"^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$")


class ProfileHandler:
    def __init__(
        self,
        accounts: AccountStore,
        members: RoomMemberStore,
        room_members: Any,
        is_mine: Any,
    ) -> None:
        self.accounts = accounts
        self.members = members
        # RoomMemberHandler: re-sends join events with the new profile.
        self.room_members = room_members
        self.is_mine = is_mine

    async def get_profile(self, user_id: str) -> dict[str, str]:
        """GET /profile/{userId}: the fields that are set (M_NOT_FOUND for unknown users)."""
        profile = await self._profile_of(user_id)
        return {k: v for k, v in zip(PROFILE_FIELDS, profile, strict=True) if v is not None}

    async def get_field(self, user_id: str, field: str) -> dict[str, str]:
        """GET /profile/{userId}/{keyName}: 404 when the user or the field is missing."""
        check_key_name(field)
        profile = await self.get_profile(user_id)
        if field not in profile:
            raise NotFound(f"The user has no {field}")
        return {field: profile[field]}

    async def set_field(
        self, requester_user_id: str, is_admin: bool, user_id: str, field: str, body: dict[str, Any]
    ) -> None:
        """PUT /profile/{userId}/{keyName} (yourself, or anyone for a server admin)."""
        check_key_name(field)
        if requester_user_id != user_id and not (is_admin and self.is_mine(user_id)):
            raise Forbidden("Cannot change the profile of another user")
        if field not in PROFILE_FIELDS:
            raise InvalidParam(f"Profile field {field!r} is not supported")
        if field not in body:
            raise MissingParam(f"Missing {field!r}")
        value = _validate(field, body[field])
        await self._profile_of(user_id)
        await self.accounts.set_profile_field(user_id, field, value)
        await self._update_join_events(user_id)

    async def delete_field(
        self, requester_user_id: str, is_admin: bool, user_id: str, field: str
    ) -> None:
        """DELETE /profile/{userId}/{keyName}."""
        check_key_name(field)
        if requester_user_id != user_id and not (is_admin and self.is_mine(user_id)):
            raise Forbidden("Cannot change the profile of another user")
        if field not in PROFILE_FIELDS:
            raise InvalidParam(f"Profile field {field!r} is not supported")
        profile = await self._profile_of(user_id)
        if profile[PROFILE_FIELDS.index(field)] is None:
            return
        await self.accounts.set_profile_field(user_id, field, None)
        await self._update_join_events(user_id)

    async def _profile_of(self, user_id: str) -> tuple[str | None, str | None]:
        profile = None
        if self.is_mine(user_id):
            user = await self.accounts.get_user(user_id)
            if user is not None and not user.deactivated:
                profile = await self.accounts.get_profile(user_id)
                if profile is None:
                    profile = (None, None)
        if profile is None:
            raise NotFound("Profile not found")
        return profile

    async def _update_join_events(self, user_id: str) -> None:
        """Re-send the user's join in each joined room so it carries the new profile."""
        for room_id in sorted(await self.members.get_rooms_for_user(user_id)):
            try:
                await self.room_members.update_membership(user_id, user_id, room_id, "join")
            except MatrixError as e:
                # One room refusing (e.g. power levels) must not fail the change.
                logger.info("profile update of %s in %s refused: %s", user_id, room_id, e.msg)
            except Exception:
                logger.exception("profile update of %s in %s failed", user_id, room_id)


def check_key_name(field: str) -> None:
    if len(field.encode("utf-8")) > 255 or not _KEY_NAME.match(field):
        raise InvalidParam(f"Invalid profile key {field[:100]!r}")


def _validate(field: str, value: Any) -> str | None:
    """The value to store; None (from null or "") clears the field."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadJson(f"{field!r} must be a string")
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL.
        raise InvalidParam(f"{field!r} must not contain NUL characters")
    if field == "displayname" and len(value) > MAX_DISPLAYNAME_LENGTH:
        raise InvalidParam(f"'displayname' is longer than {MAX_DISPLAYNAME_LENGTH} characters")
    if field == "avatar_url":
        if len(value) > MAX_AVATAR_URL_LENGTH:
            raise InvalidParam("'avatar_url' is too long")
        if not value.startswith("mxc://"):
            raise InvalidParam("'avatar_url' must be an mxc:// URI")
    return value
