"""The first checks on a PDU received from another server.

Server-server API "Checks performed on receipt of a PDU", steps 1-4:
1. a valid event of the room's version (format, sizes), else dropped;
2. signatures of every server that must have signed it, else dropped;
3. the content hash, else the event is *redacted* and processed further;
4. the auth rules against the event's own ``auth_events``, else rejected.
Steps 5 and 6 need the room's state: see handlers/federation_event.py.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from atrium.auth.rules import (
    AuthError,
    auth_types_for_event,
    check_state_dependent_auth_rules,
    check_state_independent_auth_rules,
)
from atrium.crypto.event_hashing import check_content_hash, compute_event_id
from atrium.crypto.event_signing import SignatureVerifyError
from atrium.events.event import Event, make_event_from_dict
from atrium.events.room_versions import EventFormatVersion, RoomVersion
from atrium.events.validation import EventValidationError, validate_event


class PduError(Exception):
    """The PDU was dropped or rejected; the message goes back in the /send answer."""

    def __init__(self, message: str, event_id: str | None = None) -> None:
        super().__init__(message)
        self.event_id = event_id


def event_id_of(room_version: RoomVersion, pdu: Any) -> str | None:
    """The event ID of a PDU dict, without validating it (None if it has none)."""
    if not isinstance(pdu, dict):
        return None
    if room_version.event_format == EventFormatVersion.V1:
        event_id = pdu.get("event_id")
        return event_id if isinstance(event_id, str) else None
    try:
        return compute_event_id(room_version, dict(pdu))
    except Exception:
        return None


def parse_pdu(room_version: RoomVersion, pdu: Any) -> Event:
    """Step 1: an Event from PDU JSON, or PduError."""
    if not isinstance(pdu, dict):
        raise PduError("PDU is not a JSON object")
    try:
        validate_event(room_version, pdu)
    except EventValidationError as e:
        raise PduError(f"Invalid event: {e.message}") from None
    event_dict = copy.deepcopy(pdu)
    # `unsigned` is the sending server's own data (not signed, not hashed).
    event_dict.pop("unsigned", None)
    try:
        return make_event_from_dict(event_dict, room_version)
    except (ValueError, KeyError, TypeError) as e:
        raise PduError(f"Invalid event: {e}") from None


async def check_signatures_and_hashes(keyring: Any, event: Event) -> Event:
    """Steps 2 and 3: PduError on a bad signature; a redacted copy on a bad hash."""
    pdu = event.as_dict_ref()
    try:
        await keyring.verify_event(event.room_version, pdu)
    except SignatureVerifyError as e:
        raise PduError(f"Signature check failed for {event.event_id}: {e.reason}") from None
    if not check_content_hash(dict(pdu)):
        # "Passes hash checks, otherwise it is redacted before being
        # processed further": the redacted form is what we keep.
        return event.pruned()
    return event


def auth_state_from(
    room_version: RoomVersion, event: Event, events_by_id: Mapping[str, Event]
) -> dict[tuple[str, str], Event]:
    """The (type, state_key) -> event map of the given events that ``event`` needs."""
    wanted = set(auth_types_for_event(room_version, event))
    state: dict[tuple[str, str], Event] = {}
    for candidate in events_by_id.values():
        if candidate.state_key is None:
            continue
        key = (candidate.type, candidate.state_key)
        if key in wanted:
            state[key] = candidate
    return state


def check_against_auth_events(event: Event, auth_events: Mapping[str, Event]) -> str | None:
    """Step 4: None when allowed by its own auth events, else the reason.

    ``auth_events`` maps event ID -> event and must hold every event the
    event lists (a missing one is a rejection).
    """
    room_version = event.room_version
    listed = {a: auth_events[a] for a in event.auth_event_ids() if a in auth_events}
    try:
        check_state_independent_auth_rules(room_version, event, auth_events)
        check_state_dependent_auth_rules(
            room_version, event, auth_state_from(room_version, event, listed)
        )
    except AuthError as e:
        return e.reason
    return None


def check_against_state(event: Event, state: Mapping[tuple[str, str], Event]) -> str | None:
    """Steps 5 and 6: None when allowed by the given state, else the reason."""
    try:
        check_state_dependent_auth_rules(event.room_version, event, state)
    except AuthError as e:
        return e.reason
    return None
