"""Who may redact what (spec: client-server API "Redactions" and rooms v3+
"Handling redactions": the auth rules no longer check this, the server does)."""

from __future__ import annotations

from atrium.auth.rules import get_named_level, get_user_power_level
from atrium.errors import Forbidden
from atrium.storage.stores import Stores


class RedactionHandler:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores

    async def check_can_redact(self, user_id: str, room_id: str, event_id: str) -> None:
        """Own events may always be redacted; others need the `redact` level."""
        target = await self.stores.events.get_event(event_id, allow_none=True)
        if target is not None and target.room_id == room_id and target.sender == user_id:
            return
        state_ids = await self.stores.members.get_current_state_ids(room_id)
        wanted = [
            state_ids[k]
            for k in (("m.room.create", ""), ("m.room.power_levels", ""))
            if k in state_ids
        ]
        events = await self.stores.events.get_events(wanted)
        auth_state = {e.state_key_tuple(): e for e in events.values()}
        if get_user_power_level(user_id, auth_state) < get_named_level(auth_state, "redact", 50):
            raise Forbidden("You don't have permission to redact other users' events")
