"""The resident server's side of remote membership changes.

Server-server API "Joining Rooms", "Leaving Rooms (Rejecting Invites)",
"Knocking upon a room" and "Inviting to a room":
- ``make_join`` / ``make_leave`` / ``make_knock``: an unsigned event template built on our
  DAG (prev_events = our forward extremities, auth_events from our current
  state), checked against the auth rules first so a server that may not
  join hears it now (403) rather than after signing;
- ``send_join`` / ``send_leave`` (v2), ``send_knock`` (v1): the joining
  (leaving, knocking) server's signed event.
  It must be the membership it claims (type, membership, state_key ==
  sender, sender on the requesting server, the room and event ID of the
  path), validly signed with a matching content hash (otherwise 400
  M_INVALID_PARAM, nothing stored), and allowed by the auth rules against
  its auth events, the state before it and the current state (otherwise
  403, nothing stored). It is persisted like any event and relayed to the
  room's other servers by the federation sender (``send_on_behalf_of``).
  send_join answers with the state before the event and its auth chain,
  send_knock with ``knock_room_state`` (the room's create event, name,
  join rules... as full events);
  ``omit_members`` is ignored (the full state is always sent, so
  ``members_omitted`` is false);
- ``invite`` (v2): an invite of one of our users made on another server.
  We countersign it and, when no user of ours is in the room, store it as an
  out-of-band outlier carrying ``invite_room_state`` in ``unsigned`` so the
  invitee's /sync shows it (when we are in the room it comes through /send
  like any event).
Restricted joins (rooms v8+): when the joining user is not invited and the
join rule is ``restricted``/``knock_restricted``, make_join picks one of our
users who may invite as ``join_authorised_via_users_server`` if the user is
joined to one of the allowed rooms (as far as this server knows), and
send_join adds our signature.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from atrium.auth.power_levels import (
    INVITE_DEFAULT,
    get_named_level,
    get_user_power_level,
)
from atrium.crypto.event_hashing import check_content_hash
from atrium.crypto.event_signing import SignatureVerifyError, compute_event_signature
from atrium.errors import Forbidden, InvalidParam, MatrixError, NotFound
from atrium.events.event import Event, make_event_from_dict
from atrium.events.room_versions import EventFormatVersion, RoomVersion, get_room_version
from atrium.federation.pdu import PduError, parse_pdu
from atrium.state.context import EventContext
from atrium.storage.stores.errors import NotFoundError, UnsupportedRoomVersionError
from atrium.sync.stripped_state import received_stripped_state, room_state_for_stripping

logger = logging.getLogger(__name__)

MEMBER = "m.room.member"
JOIN_RULES = ("m.room.join_rules", "")
POWER_LEVELS = ("m.room.power_levels", "")
CREATE = ("m.room.create", "")


def server_of(user_id: str) -> str:
    return user_id.split(":", 1)[-1]


class IncompatibleRoomVersion(MatrixError):
    """400 M_INCOMPATIBLE_ROOM_VERSION, naming the room's version."""

    def __init__(self, room_version: str) -> None:
        super().__init__(
            400,
            f"Your server does not support this room's version {room_version}",
            "M_INCOMPATIBLE_ROOM_VERSION",
            room_version=room_version,
        )


class FederationMembershipHandler:
    def __init__(
        self,
        *,
        stores: Any,
        accounts: Any,
        creation: Any,
        events: Any,
        reads: Any,
        keyring: Any,
        event_sender: Any,
        server_name: str,
        signing_key: Any,
    ) -> None:
        self.stores = stores
        self.accounts = accounts
        self.creation = creation
        self.events = events
        self.reads = reads
        self.keyring = keyring
        self.event_sender = event_sender
        self.server_name = server_name
        self.signing_key = signing_key

    def is_mine(self, user_id: str) -> bool:
        return server_of(user_id) == self.server_name

    # -- shared checks ------------------------------------------------------------------
    async def _joined_room_version(self, room_id: str) -> RoomVersion:
        """The version of a room we are in; 404 M_NOT_FOUND otherwise."""
        try:
            room_version = await self.stores.rooms.get_room_version(room_id)
        except NotFoundError:
            raise NotFound(f"Unknown room {room_id}") from None
        except UnsupportedRoomVersionError:
            raise NotFound(f"Room {room_id} has a version this server does not support") from None
        if not await self.stores.members.is_host_joined(room_id, self.server_name):
            raise NotFound(f"This server is not in room {room_id}")
        return room_version

    # -- make_join / make_leave -------------------------------------------------------------
    async def make_membership(
        self,
        origin: str,
        room_id: str,
        user_id: str,
        membership: str,
        supported_versions: Sequence[str] = ("1",),
    ) -> dict[str, Any]:
        """The event template of make_join (``membership="join"``) or make_leave."""
        if server_of(user_id) != origin:
            raise Forbidden(f"{user_id} is not a user of {origin}")
        room_version = await self._joined_room_version(room_id)
        if membership in ("join", "knock") and room_version.identifier not in supported_versions:
            raise IncompatibleRoomVersion(room_version.identifier)
        if membership == "knock" and not room_version.knock_join_rule:
            # Knocking came with room version 7.
            raise Forbidden(f"Room version {room_version.identifier} does not support knocking")
        content: dict[str, Any] = {"membership": membership}
        if membership == "join" and room_version.restricted_join_rule:
            authoriser = await self._restricted_join_authoriser(room_id, user_id)
            if authoriser is not None:
                content["join_authorised_via_users_server"] = authoriser
        # Built and auth-checked as a local event would be (Forbidden if the
        # user may not do this now); the signature is ours, and dropped.
        event, _ = await self.creation.create_event(
            {
                "type": MEMBER,
                "room_id": room_id,
                "sender": user_id,
                "state_key": user_id,
                "content": content,
            },
            room_version=room_version,
        )
        template = event.get_pdu_json()
        for key in ("hashes", "signatures", "unsigned"):
            template.pop(key, None)
        if room_version.event_format == EventFormatVersion.V1:
            # The joining server names its own event.
            template.pop("event_id", None)
        template["origin"] = self.server_name
        return {"event": template, "room_version": room_version.identifier}

    async def _restricted_join_authoriser(self, room_id: str, user_id: str) -> str | None:
        """A user of ours who may invite, when ``user_id`` needs one for a
        restricted join (rooms/v8 "Restricted rooms"); None when the join
        needs no authoriser (invited, already joined, not restricted)."""
        state = await self.stores.members.get_current_state_ids(room_id)
        keys = (CREATE, JOIN_RULES, POWER_LEVELS, (MEMBER, user_id))
        wanted = [state[k] for k in keys if k in state]
        events = await self.stores.events.get_events(wanted)
        by_key = {(e.type, e.state_key): e for e in events.values()}
        join_rules = by_key.get(JOIN_RULES)
        rule = join_rules.content.get("join_rule") if join_rules is not None else None
        if rule not in ("restricted", "knock_restricted"):
            return None
        member = by_key.get((MEMBER, user_id))
        if member is not None and member.membership in ("invite", "join"):
            return None
        allowed_rooms = [
            a.get("room_id")
            for a in (join_rules.content.get("allow") or [])  # type: ignore[union-attr]
            if isinstance(a, dict) and a.get("type") == "m.room_membership"
        ]
        in_allowed = False
        for allowed in allowed_rooms:
            if isinstance(allowed, str) and user_id in await self.stores.members.get_users_in_room(
                allowed
            ):
                in_allowed = True
                break
        if not in_allowed:
            raise MatrixError(
                400,
                "This server cannot verify that you may join through the allowed rooms",
                "M_UNABLE_TO_AUTHORISE_JOIN",
            )
        # Levels as the auth rules read them (v12: creators, unlisted, have
        # an infinite level).
        auth_state = {k: by_key[k] for k in (CREATE, POWER_LEVELS) if k in by_key}
        invite_level = get_named_level(auth_state, "invite", INVITE_DEFAULT)
        for member_id in sorted(await self.stores.members.get_users_in_room(room_id)):
            if self.is_mine(member_id):
                if get_user_power_level(member_id, auth_state) >= invite_level:
                    return member_id
        raise MatrixError(
            400, "No user of this server may invite you to this room", "M_UNABLE_TO_GRANT_JOIN"
        )

    # -- send_join / send_leave --------------------------------------------------------------
    async def _checked_membership_event(
        self, origin: str, room_id: str, event_id: str, pdu: Any, membership: str
    ) -> Event:
        """The submitted event, if it is what send_join/send_leave accept (400 otherwise)."""
        room_version = await self._joined_room_version(room_id)
        try:
            event = parse_pdu(room_version, pdu)
        except PduError as e:
            raise InvalidParam(str(e)) from None
        if event.event_id != event_id:
            raise InvalidParam(f"The event's ID is {event.event_id}, not {event_id}")
        if event.room_id != room_id:
            raise InvalidParam("The event is for another room")
        if event.type != MEMBER:
            raise InvalidParam("The event is not an m.room.member event")
        if event.membership != membership:
            raise InvalidParam(f"The event's membership is not {membership!r}")
        if event.state_key != event.sender:
            raise InvalidParam("The event's state_key is not its sender")
        if server_of(event.sender) != origin:
            raise InvalidParam(f"The event's sender is not a user of {origin}")
        authoriser = event.content.get("join_authorised_via_users_server")
        if (
            membership == "join"
            and room_version.restricted_join_rule
            and isinstance(authoriser, str)
            and self.is_mine(authoriser)
        ):
            # Our signature is one the event needs (rooms/v8 auth rule 4.2):
            # add it before checking the set.
            event = self._countersigned(event)
        await self._check_signed(event)
        return event

    async def _check_signed(self, event: Event) -> None:
        """400 M_INVALID_PARAM unless validly signed by every server it needs, hash matching."""
        try:
            await self.keyring.verify_event(event.room_version, event.as_dict_ref())
        except SignatureVerifyError as e:
            raise InvalidParam(f"Signature check failed: {e.reason}") from None
        if not check_content_hash(dict(event.as_dict_ref())):
            raise InvalidParam("The event's content hash does not match its content")

    async def send_membership(
        self, origin: str, room_id: str, event_id: str, pdu: Any, membership: str
    ) -> Event:
        """Check and persist a join or leave from send_join/send_leave; the stored event."""
        event = await self._checked_membership_event(origin, room_id, event_id, pdu, membership)
        event.internal_metadata.send_on_behalf_of = origin
        try:
            written = await self.events.on_send_membership_event(origin, event)
        except PduError as e:
            raise Forbidden(str(e)) from None
        if written is not None:
            # The answer is read here: wait until this process saw the write.
            await self.creation.wait_for_position(*written)
        stored = await self.stores.events.get_event(event.event_id, allow_none=True)
        if stored is None:
            # Seen before but rejected, or not stored at all.
            raise Forbidden(f"Event {event.event_id} was not accepted")
        return stored

    async def send_join(self, origin: str, room_id: str, event_id: str, pdu: Any) -> dict[str, Any]:
        event = await self.send_membership(origin, room_id, event_id, pdu, "join")
        state = await self.reads.state_before(event)
        state_ids = sorted(state.values())
        chain_ids = await self.stores.events.get_auth_chain_ids(
            [*state_ids, *event.auth_event_ids()]
        )
        state_events = await self.stores.events.get_events_as_list(state_ids)
        chain_events = await self.stores.events.get_events_as_list(sorted(chain_ids))
        return {
            "origin": self.server_name,
            "state": [e.get_pdu_json() for e in state_events],
            "auth_chain": [e.get_pdu_json() for e in chain_events],
            "event": event.get_pdu_json(),
            "members_omitted": False,
        }

    async def send_knock(
        self, origin: str, room_id: str, event_id: str, pdu: Any
    ) -> dict[str, Any]:
        """PUT /v1/send_knock: the knock is checked and stored like a join;
        the answer describes the room to the knocker (``knock_room_state``:
        full events of the stripped-state types, the create event included)."""
        event = await self.send_membership(origin, room_id, event_id, pdu, "knock")
        events = await room_state_for_stripping(self.stores, room_id, event.sender)
        return {"knock_room_state": [e.get_pdu_json() for e in events if e.type != MEMBER]}

    def _countersigned(self, event: Event) -> Event:
        pdu = event.get_dict()
        pdu.pop("unsigned", None)
        signature = compute_event_signature(
            event.room_version, pdu, self.server_name, self.signing_key
        )
        signatures = pdu.setdefault("signatures", {})
        for server, by_key in signature.items():
            signatures.setdefault(server, {}).update(by_key)
        return make_event_from_dict(pdu, event.room_version, event.format_version)

    # -- invite ---------------------------------------------------------------------------------
    async def on_invite(
        self, origin: str, room_id: str, event_id: str, body: Any
    ) -> dict[str, Any]:
        """PUT /v2/invite: countersign an invite of one of our users (see module doc)."""
        if not isinstance(body, dict):
            raise InvalidParam("Content must be a JSON object")
        version_id = body.get("room_version")
        if not isinstance(version_id, str):
            raise InvalidParam("'room_version' must be a string")
        room_version = get_room_version(version_id)
        if room_version is None:
            raise IncompatibleRoomVersion(version_id)
        known = await self.stores.rooms.get_room_version_id(room_id)
        if known is not None and known != version_id:
            raise InvalidParam(f"Room {room_id} has version {known}, not {version_id}")
        try:
            event = parse_pdu(room_version, body.get("event"))
        except PduError as e:
            raise InvalidParam(str(e)) from None
        if event.event_id != event_id or event.room_id != room_id:
            raise InvalidParam("The event does not match the room and event ID of the request")
        if event.type != MEMBER or event.membership != "invite":
            raise InvalidParam("The event is not an invite")
        target = event.state_key or ""
        if not self.is_mine(target):
            raise InvalidParam(f"{target} is not a user of this server")
        if await self.accounts.get_user(target) is None:
            raise InvalidParam(f"{target} does not exist on this server")
        if server_of(event.sender) != origin:
            raise InvalidParam(f"The invite's sender is not a user of {origin}")
        await self._check_signed(event)
        signed = self._countersigned(event)
        answer = signed.get_pdu_json()
        if await self.stores.members.is_host_joined(room_id, self.server_name):
            # It will reach us through /send like any event of the room.
            return {"event": answer}
        if await self.stores.events.have_seen_events([signed.event_id]):
            return {"event": answer}
        pdu = signed.get_dict()
        pdu["unsigned"] = {
            "invite_room_state": received_stripped_state(body.get("invite_room_state"))
        }
        invite = make_event_from_dict(pdu, room_version, signed.format_version)
        invite.internal_metadata.outlier = True
        invite.internal_metadata.out_of_band_membership = True
        if known is None:
            # Events are read with their room's version: the room row comes first.
            await self.stores.rooms.store_room(room_id, room_version, None, False)
        await self.event_sender.send_events([(invite, EventContext.for_outlier())])
        return {"event": answer}
