"""Running the user-data and ephemeral /sync sections directly, as the sync
handler will: build a SyncRequest for a user between two tokens and let each
section fill a response."""

from __future__ import annotations

from typing import Any

from atrium.sync.sections import SyncRequest
from atrium.sync.sections_ephemeral import ReceiptsSection, TypingSection
from atrium.sync.sections_user_data import AccountDataSection, PresenceSection
from atrium.sync.token import StreamToken

SECTION_TYPES = (AccountDataSection, PresenceSection, TypingSection, ReceiptsSection)


async def sections_sync(
    hs: Any,
    user_id: str,
    since: StreamToken | None = None,
    newly_joined: frozenset[str] = frozenset(),
    sync_filter: Any = None,
) -> tuple[dict[str, Any], StreamToken]:
    """(response, next_batch token) from this domain's sections only."""
    now = hs.current_token()
    joined = await hs.stores.members.get_rooms_for_user(user_id)
    request = SyncRequest(
        user_id=user_id,
        device_id="DEVICE",
        since=since,
        now=now,
        filter=sync_filter,
        joined_room_ids=frozenset(joined),
        newly_joined_room_ids=newly_joined,
    )
    response: dict[str, Any] = {}
    for section in hs.sync_sections:
        if isinstance(section, SECTION_TYPES):
            await section.fill(request, response)
    return response, now


def room_ephemeral(response: dict[str, Any], room_id: str, event_type: str) -> list[dict[str, Any]]:
    entry = response.get("rooms", {}).get("join", {}).get(room_id, {})
    return [e for e in entry.get("ephemeral", {}).get("events", []) if e["type"] == event_type]


def room_account_data(response: dict[str, Any], room_id: str) -> dict[str, Any]:
    entry = response.get("rooms", {}).get("join", {}).get(room_id, {})
    return {e["type"]: e["content"] for e in entry.get("account_data", {}).get("events", [])}


def global_account_data(response: dict[str, Any]) -> dict[str, Any]:
    return {e["type"]: e["content"] for e in response.get("account_data", {}).get("events", [])}


async def shared_room(alice: Any, *others: Any) -> str:
    """A public room alice created and every other client joined."""
    from tests.support.client import q

    created = await alice.post("/_matrix/client/v3/createRoom", {"preset": "public_chat"})
    assert created.code == 200, created
    room_id = created.json["room_id"]
    for other in others:
        joined = await other.post(f"/_matrix/client/v3/join/{q(room_id)}")
        assert joined.code == 200, joined
    return room_id


async def long_poll(hs: Any, user_id: str, since: StreamToken, timeout_ms: int = 10_000) -> Any:
    """Start a /sync-style long-poll on the notifier; returns a Deferred of
    (response, seconds waited) that fires when the sections have something."""
    import time

    from twisted.internet import defer

    rooms = await hs.stores.members.get_rooms_for_user(user_id)
    started = time.monotonic()

    async def check(_token: StreamToken) -> dict[str, Any]:
        response, _ = await sections_sync(hs, user_id, since)
        return response

    async def run() -> tuple[dict[str, Any], float]:
        response = await hs.notifier.wait_for_events(
            user_id, rooms, timeout_ms, check, lambda r: not r, since=since
        )
        return response, time.monotonic() - started

    return defer.ensureDeferred(run())
