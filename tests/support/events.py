"""Builders of test PDUs in any room version 1-12.

``make_pdu`` builds one event in the wire format of the room version (v1/v2
events get an `event_id` and [[id, hashes]] references; v3+ events derive
their ID from the content). ``RoomBuilder`` grows a linear room: each event
points at the previous one, picks its auth events from the current state
with the auth events selection algorithm, and updates the state. In room
version 12 the create event has no `room_id`: the builder takes the room ID
from the create event's ID (and events do not list the create event).

Signatures are placeholders (auth rules only look for a server's entry);
hashes are not computed. Tests that need real signatures sign themselves.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable
from typing import Any

from canonicaljson import encode_canonical_json
from unpaddedbase64 import encode_base64

from atrium.auth.rules import selected_auth_types
from atrium.events.event import Event, make_event_from_dict
from atrium.events.room_versions import RoomVersion

ROOM_ID = "!room:example.org"
CREATOR = "@creator:example.org"

# Makes otherwise identical events (same sender, type, content) distinct.
_timestamps = itertools.count(1_000_000)


def _domain(identifier: str) -> str:
    return identifier.split(":", 1)[1]


def make_pdu(
    room_version: RoomVersion,
    *,
    type: str,
    sender: str,
    content: dict[str, Any] | None = None,
    state_key: str | None = None,
    room_id: str = ROOM_ID,
    prev_events: Iterable[str] = (),
    auth_events: Iterable[str] = (),
    depth: int = 1,
    origin_server_ts: int | None = None,
    event_id: str | None = None,
    signatures: dict[str, dict[str, str]] | None = None,
    redacts: str | None = None,
    rejected_reason: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Event:
    """One event in the room version's format.

    Default signatures hold one (fake) signature from the sender's server.
    ``redacts`` goes into the content in v11 and at the top level before.
    ``extra`` keys are set last and may override anything.
    """
    content = dict(content or {})
    d: dict[str, Any] = {
        "type": type,
        "sender": sender,
        "content": content,
        "depth": depth,
        "origin_server_ts": next(_timestamps) if origin_server_ts is None else origin_server_ts,
        "hashes": {"sha256": "not-computed"},
        "signatures": signatures
        if signatures is not None
        else {_domain(sender): {"ed25519:test": "not-a-real-signature"}},
    }
    if not (room_version.room_id_is_create_event_id and type == "m.room.create"):
        d["room_id"] = room_id
    if state_key is not None:
        d["state_key"] = state_key
    if redacts is not None:
        if room_version.redacts_in_content:
            content["redacts"] = redacts
        else:
            d["redacts"] = redacts
    if room_version.is_v1_event_ids:
        d["prev_events"] = [[e, {"sha256": "not-computed"}] for e in prev_events]
        d["auth_events"] = [[e, {"sha256": "not-computed"}] for e in auth_events]
    else:
        d["prev_events"] = list(prev_events)
        d["auth_events"] = list(auth_events)
    if extra:
        d.update(extra)
    if room_version.is_v1_event_ids:
        if event_id is None:
            digest = hashlib.sha256(encode_canonical_json(d)).digest()
            event_id = f"${encode_base64(digest, urlsafe=True)[:20]}:{_domain(sender)}"
        d["event_id"] = event_id
    return make_event_from_dict(d, room_version, rejected_reason=rejected_reason)


class RoomBuilder:
    """A linear test room: events, the current state, the last event."""

    def __init__(
        self, room_version: RoomVersion, room_id: str = ROOM_ID, creator: str = CREATOR
    ) -> None:
        self.room_version = room_version
        self.room_id = room_id
        self.creator = creator
        self.state: dict[tuple[str, str], Event] = {}
        self.events: dict[str, Event] = {}
        self.last_event_id: str | None = None
        self.depth = 0

    def build(
        self,
        type: str,
        sender: str,
        content: dict[str, Any] | None = None,
        state_key: str | None = None,
        *,
        prev_events: Iterable[str] | None = None,
        auth_events: Iterable[str] | None = None,
        **kwargs: Any,
    ) -> Event:
        """An event on top of the room, NOT added to it.

        Auth events default to what the selection algorithm picks from the
        current state; prev_events to the last event.
        """
        if prev_events is None:
            prev_events = [] if self.last_event_id is None else [self.last_event_id]
        prev_events = list(prev_events)
        common = dict(
            type=type,
            sender=sender,
            content=content,
            state_key=state_key,
            room_id=self.room_id,
            prev_events=prev_events,
            depth=self.depth + 1,
        )
        common.update(kwargs)
        if auth_events is None:
            draft = make_pdu(self.room_version, **common)  # type: ignore[arg-type]
            wanted = selected_auth_types(self.room_version, draft)
            auth_events = [self.state[k].event_id for k in wanted if k in self.state]
        return make_pdu(self.room_version, auth_events=auth_events, **common)  # type: ignore[arg-type]

    def add(self, event: Event) -> Event:
        """Append a built event: it becomes the last event and, if a state
        event, part of the state."""
        self.events[event.event_id] = event
        if event.type == "m.room.create" and self.room_version.room_id_is_create_event_id:
            # v12: the room ID is the create event's ID with `!`.
            self.room_id = event.room_id
        self.last_event_id = event.event_id
        self.depth = max(self.depth, event.depth)
        if event.state_key is not None:
            self.state[(event.type, event.state_key)] = event
        return event

    def send(
        self,
        type: str,
        sender: str,
        content: dict[str, Any] | None = None,
        state_key: str | None = None,
        **kw: Any,
    ) -> Event:
        """build + add."""
        return self.add(self.build(type, sender, content, state_key, **kw))

    def create(self, content: dict[str, Any] | None = None, sender: str | None = None) -> Event:
        """The m.room.create event with the right content for the version."""
        sender = sender or self.creator
        if content is None:
            content = {"room_version": self.room_version.identifier}
            if not self.room_version.implicit_room_creator:
                content["creator"] = sender
        return self.send("m.room.create", sender, content, "")

    def member(
        self, user_id: str, membership: str, sender: str | None = None, **content: Any
    ) -> Event:
        return self.send(
            "m.room.member", sender or user_id, {"membership": membership, **content}, user_id
        )

    def auth_events_of(self, event: Event) -> dict[tuple[str, str], Event]:
        """The event's auth events (which must be in this room) as a state map."""
        found = (self.events[e] for e in event.auth_event_ids())
        return {(e.type, e.state_key or ""): e for e in found}


def standard_room(
    room_version: RoomVersion,
    *,
    join_rule: str = "public",
    members: Iterable[str] = (),
    users: dict[str, Any] | None = None,
    power_levels: dict[str, Any] | None = None,
) -> RoomBuilder:
    """A room as createRoom makes it: create, creator join, power levels
    (creator 100 plus ``users``, extra keys from ``power_levels``), join
    rules; then a join by each of ``members``. In v12 the creator is not
    listed (infinite level)."""
    room = RoomBuilder(room_version)
    room.create()
    room.member(room.creator, "join")
    # v12: creators have an infinite level and must not be listed.
    creator_entry = {} if room_version.privileged_creators else {room.creator: 100}
    pl_content: dict[str, Any] = {"users": {**creator_entry, **(users or {})}}
    pl_content.update(power_levels or {})
    room.send("m.room.power_levels", room.creator, pl_content, "")
    room.send("m.room.join_rules", room.creator, {"join_rule": join_rule}, "")
    for user_id in members:
        if join_rule != "public":
            room.member(user_id, "invite", sender=room.creator)
        room.member(user_id, "join")
    return room
