"""Our users' membership in rooms this server is not (yet) in.

Server-server API, the joining server's side:
- ``join``: make_join to a resident server (trying each candidate in
  turn), fill in and sign the event, send_join (v2), then check what comes
  back before believing it: every state and auth chain event must be of the
  room, validly signed, with a matching content hash (else redacted), and
  allowed by its own auth events; the create event must name the room
  version make_join gave. They are stored as outliers, and the join as a
  normal event whose state before it is the returned state, so it becomes
  the room's current state: /sync, /messages and /send work from there;
- ``knock``: make_knock / send_knock (v1) through a resident server, the
  knock stored out of band with the ``knock_room_state`` it answered;
- ``leave``: for a room we only know of through an invite (or knock): make_leave /
  send_leave through the inviting server, the leave stored out of band. If
  no server takes it, the invite is still rejected locally: a leave built
  on the invite alone, signed by us, stored out of band (the inviting
  server is not told);
- ``invite``: an invite of a user of another server is countersigned by
  that server (``/v2/invite``) before it is stored and sent to the room;
- ``query_alias``: a remote alias through ``/query/directory``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from atrium.crypto.event_signing import (
    SignatureVerifyError,
    add_hashes_and_signatures,
    verify_event_signature,
)
from atrium.errors import Forbidden, MatrixError, NotFound
from atrium.events.builder import build_event, random_v1_event_id
from atrium.events.event import Event, make_event_from_dict
from atrium.events.room_versions import KNOWN_ROOM_VERSIONS, EventFormatVersion, get_room_version
from atrium.events.validation import EventValidationError, validate_event
from atrium.federation.client import HttpResponseError, RequestSendFailed
from atrium.federation.pdu import PduError, check_signatures_and_hashes, parse_pdu
from atrium.state.context import EventContext
from atrium.sync.stripped_state import (
    received_stripped_state,
    room_state_for_stripping,
    stripped,
)

logger = logging.getLogger(__name__)

FED_V1 = "/_matrix/federation/v1"
FED_V2 = "/_matrix/federation/v2"
MEMBER = "m.room.member"
# A send_join answer bigger than this many events is refused.
MAX_JOIN_EVENTS = 50_000


def _q(value: str) -> str:
    return quote(value, safe="")


def server_of(identifier: str) -> str:
    return identifier.split(":", 1)[-1]


class RemoteJoinError(MatrixError):
    """No resident server let us join (502: the failure is theirs, not the client's)."""

    def __init__(self, msg: str) -> None:
        super().__init__(502, msg, "M_UNKNOWN")


def _passthrough(error: HttpResponseError) -> MatrixError:
    """A remote 4xx Matrix error for our client; anything else is a 502."""
    body = error.body if isinstance(error.body, dict) else {}
    errcode = body.get("errcode")
    message = body.get("error") if isinstance(body.get("error"), str) else str(error)
    if 400 <= error.code < 500 and isinstance(errcode, str):
        # M_MISSING_PARAM / M_INVALID_PARAM describe our request, not the client's.
        if errcode in ("M_MISSING_PARAM", "M_INVALID_PARAM"):
            return RemoteJoinError(f"The remote server refused our request: {message}")
        extra = {}
        if isinstance(body.get("room_version"), str):
            extra["room_version"] = body["room_version"]
        return MatrixError(error.code, message, errcode, **extra)
    return RemoteJoinError(f"The remote server failed: {message}")


class RemoteMembershipHandler:
    def __init__(
        self,
        *,
        stores: Any,
        client: Any,
        keyring: Any,
        events: Any,
        creation: Any,
        clock: Any,
        server_name: str,
        signing_key: Any,
    ) -> None:
        self.stores = stores
        self.client = client
        self.keyring = keyring
        self.events = events
        self.creation = creation
        self.clock = clock
        self.server_name = server_name
        self.signing_key = signing_key

    # -- aliases -------------------------------------------------------------------------------
    async def query_alias(self, alias: str) -> tuple[str, list[str]]:
        """(room_id, servers) of a remote alias; 404 M_NOT_FOUND if it has none."""
        try:
            answer = await self.client.get_json(
                server_of(alias), f"{FED_V1}/query/directory", args={"room_alias": alias}
            )
        except HttpResponseError as e:
            if e.code == 404:
                raise NotFound(f"Room alias {alias} not found") from None
            raise _passthrough(e) from None
        except RequestSendFailed as e:
            raise RemoteJoinError(f"Could not look up {alias}: {e}") from None
        room_id = answer.get("room_id") if isinstance(answer, dict) else None
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise RemoteJoinError(f"The server of {alias} gave no room ID")
        servers = answer.get("servers")
        if not isinstance(servers, list):
            servers = []
        return room_id, [s for s in servers if isinstance(s, str)]

    # -- make_* / send_* ------------------------------------------------------------------------
    async def _make_membership(
        self, servers: Sequence[str], room_id: str, user_id: str, membership: str
    ) -> tuple[str, Any, dict[str, Any]]:
        """(server, room version, template) from the first candidate that answers."""
        candidates = [s for s in dict.fromkeys(servers) if s and s != self.server_name]
        if not candidates:
            raise NotFound(f"No server known to be in room {room_id}")
        last: MatrixError | None = None
        for server in candidates:
            path = f"{FED_V1}/make_{membership}/{_q(room_id)}/{_q(user_id)}"
            args = {"ver": list(KNOWN_ROOM_VERSIONS)} if membership in ("join", "knock") else None
            try:
                answer = await self.client.get_json(server, path, args=args)
            except HttpResponseError as e:
                error = _passthrough(e)
                if e.code in (400, 403) and error.errcode in (
                    "M_FORBIDDEN",
                    "M_INCOMPATIBLE_ROOM_VERSION",
                ):
                    # The room itself says no: another server would say the same.
                    raise error from None
                logger.info("make_%s %s on %s failed: %s", membership, room_id, server, e)
                last = error
                continue
            except RequestSendFailed as e:
                logger.info("make_%s %s on %s failed: %s", membership, room_id, server, e)
                last = RemoteJoinError(f"Could not reach {server}: {e}")
                continue
            template = answer.get("event") if isinstance(answer, dict) else None
            version_id = answer.get("room_version", "1") if isinstance(answer, dict) else None
            room_version = get_room_version(version_id) if isinstance(version_id, str) else None
            if room_version is None:
                last = RemoteJoinError(f"{server} named an unsupported room version")
                continue
            if not self._template_ok(template, room_id, user_id, membership):
                last = RemoteJoinError(f"{server} sent a bad make_{membership} template")
                continue
            return server, room_version, template
        assert last is not None
        raise last

    @staticmethod
    def _template_ok(template: Any, room_id: str, user_id: str, membership: str) -> bool:
        if not isinstance(template, dict):
            return False
        content = template.get("content")
        return (
            template.get("type") == MEMBER
            and template.get("room_id") == room_id
            and template.get("sender") == user_id
            and template.get("state_key") == user_id
            and isinstance(content, dict)
            and content.get("membership") == membership
            and isinstance(template.get("prev_events"), list)
            and isinstance(template.get("auth_events"), list)
            and isinstance(template.get("depth"), int)
        )

    def _sign_template(
        self, room_version: Any, template: dict[str, Any], content: dict[str, Any]
    ) -> Event:
        """Our event from a make_* template: our content and timestamp, hashed and signed."""
        event_dict: dict[str, Any] = {
            k: template[k]
            for k in (
                "type",
                "room_id",
                "sender",
                "state_key",
                "depth",
                "prev_events",
                "auth_events",
            )
        }
        merged = dict(template["content"])
        merged.update(content)
        merged["membership"] = template["content"]["membership"]
        event_dict["content"] = merged
        event_dict["origin_server_ts"] = self.clock.time_msec()
        if room_version.event_format == EventFormatVersion.V1:
            event_dict["origin"] = self.server_name
            event_dict["event_id"] = random_v1_event_id(self.server_name)
        add_hashes_and_signatures(room_version, event_dict, self.server_name, self.signing_key)
        try:
            validate_event(room_version, event_dict)
        except EventValidationError as e:
            raise RemoteJoinError(
                f"The resident server's template is not valid: {e.message}"
            ) from None
        return make_event_from_dict(event_dict, room_version)

    async def _send_membership(self, server: str, endpoint: str, event: Event) -> Any:
        """PUT ``endpoint``/{roomId}/{eventId} (send_join, send_knock): the
        answer; the server's 4xx Matrix errors are passed on, others are 502."""
        try:
            return await self.client.put_json(
                server,
                f"{endpoint}/{_q(event.room_id)}/{_q(event.event_id)}",
                event.get_pdu_json(),
            )
        except HttpResponseError as e:
            raise _passthrough(e) from None
        except RequestSendFailed as e:
            name = endpoint.rsplit("/", 1)[-1]
            raise RemoteJoinError(f"{name} to {server} failed: {e}") from None

    # -- join ------------------------------------------------------------------------------------
    async def join(
        self, user_id: str, room_id: str, servers: Sequence[str], content: dict[str, Any]
    ) -> Event:
        server, room_version, template = await self._make_membership(
            servers, room_id, user_id, "join"
        )
        event = self._sign_template(room_version, template, content)
        answer = await self._send_membership(server, f"{FED_V2}/send_join", event)
        if not isinstance(answer, dict):
            raise RemoteJoinError(f"{server} gave no send_join answer")
        event = await self._resident_signed(room_version, event, answer.get("event"))
        state_ids = await self._store_join_state(server, room_version, room_id, answer)
        async with self.events.room_lock(room_id):
            try:
                writer, token = await self.events.process_event(
                    server, event, state_ids, check_soft_fail=False, store_rejected=False
                )
            except PduError as e:
                raise Forbidden(f"Our join is not allowed by the room's state: {e}") from None
        await self.creation.wait_for_position(writer, token)
        return event

    async def _resident_signed(self, room_version: Any, ours: Event, returned: Any) -> Event:
        """The join as the resident server sent it to the room (restricted joins:
        with its signature), if it is ours; else ours."""
        if not isinstance(returned, dict):
            return ours
        try:
            theirs = parse_pdu(room_version, returned)
        except PduError:
            return ours
        if theirs.event_id != ours.event_id:
            return ours
        try:
            return await check_signatures_and_hashes(self.keyring, theirs)
        except PduError as e:
            logger.info("Ignoring the resident's copy of %s: %s", ours.event_id, e)
            return ours

    async def _store_join_state(
        self, origin: str, room_version: Any, room_id: str, answer: dict[str, Any]
    ) -> dict[tuple[str, str], str]:
        """Check and store (as outliers) the state and auth chain of a send_join answer;
        the state before our join."""
        state_pdus = answer.get("state")
        chain_pdus = answer.get("auth_chain")
        if not isinstance(state_pdus, list) or not isinstance(chain_pdus, list):
            raise RemoteJoinError(f"{origin}'s send_join answer has no state or auth chain")
        if len(state_pdus) + len(chain_pdus) > MAX_JOIN_EVENTS:
            raise RemoteJoinError("The room's state is larger than this server accepts")
        checked: dict[str, Event] = {}
        state_ids: list[str] = []
        for index, pdu in enumerate([*state_pdus, *chain_pdus]):
            try:
                event = await check_signatures_and_hashes(
                    self.keyring, parse_pdu(room_version, pdu)
                )
            except PduError as e:
                logger.info("Dropping a send_join event from %s: %s", origin, e)
                continue
            if event.room_id != room_id:
                continue
            checked[event.event_id] = event
            if index < len(state_pdus):
                state_ids.append(event.event_id)
        create = next(
            (
                checked[e]
                for e in state_ids
                if checked[e].type == "m.room.create" and checked[e].state_key == ""
            ),
            None,
        )
        if create is None:
            raise RemoteJoinError("The room's state has no valid m.room.create event")
        if str(create.content.get("room_version", "1")) != room_version.identifier:
            raise RemoteJoinError("The room's create event names another room version")
        have = await self.stores.events.have_seen_events(checked)
        await self.events.fetcher.persist_outliers(
            e for e in checked.values() if e.event_id not in have
        )
        # Rejected events (stored, never loaded) are not state.
        stored = await self.stores.events.get_events(state_ids)
        state: dict[tuple[str, str], str] = {}
        for event_id in state_ids:
            event = stored.get(event_id)
            if event is not None and event.state_key is not None:
                state[(event.type, event.state_key)] = event_id
        return state

    # -- knock -------------------------------------------------------------------------------------
    async def knock(
        self, user_id: str, room_id: str, servers: Sequence[str], content: dict[str, Any]
    ) -> Event:
        """Knock on a room through a resident server (server-server API
        "Knocking upon a room"): make_knock, sign, send_knock. The knock is
        stored out of band with the ``knock_room_state`` the server sent, so
        the user's /sync shows the room under ``knock``."""
        server, room_version, template = await self._make_membership(
            servers, room_id, user_id, "knock"
        )
        if not room_version.knock_join_rule:
            raise RemoteJoinError(f"{server} offered a knock in room version {room_version}")
        event = self._sign_template(room_version, template, content)
        answer = await self._send_membership(server, f"{FED_V1}/send_knock", event)
        room_state = answer.get("knock_room_state") if isinstance(answer, dict) else None
        pdu = event.get_dict()
        pdu["unsigned"] = {"knock_room_state": received_stripped_state(room_state)}
        knock = make_event_from_dict(pdu, room_version, event.format_version)
        knock.internal_metadata.outlier = True
        knock.internal_metadata.out_of_band_membership = True
        known = await self.stores.rooms.get_room_version_id(room_id)
        if known is None:
            # Events are read with their room's version: the room row comes first.
            await self.stores.rooms.store_room(room_id, room_version, None, False)
        await self.creation.send([(knock, EventContext.for_outlier())])
        return knock

    # -- leave (rejecting an invite) ---------------------------------------------------------------
    async def leave(
        self, user_id: str, room_id: str, invite: Event, content: dict[str, Any]
    ) -> Event:
        """Leave a room we only hold ``invite`` (the user's invite or knock) of."""
        servers = [server_of(invite.sender)]
        if ":" in room_id:
            # Rooms 1-11 name the creating server; v12 room IDs have no domain.
            servers.append(server_of(room_id))
        event: Event | None = None
        try:
            server, room_version, template = await self._make_membership(
                servers, room_id, user_id, "leave"
            )
            event = self._sign_template(room_version, template, content)
            await self.client.put_json(
                server,
                f"{FED_V2}/send_leave/{_q(room_id)}/{_q(event.event_id)}",
                event.get_pdu_json(),
            )
        except (MatrixError, HttpResponseError, RequestSendFailed) as e:
            logger.info("Remote leave of %s failed (%s): rejecting locally", room_id, e)
            event = self._local_rejection(invite, user_id, content)
        event.internal_metadata.outlier = True
        event.internal_metadata.out_of_band_membership = True
        await self.creation.send([(event, EventContext.for_outlier())])
        return event

    def _local_rejection(self, invite: Event, user_id: str, content: dict[str, Any]) -> Event:
        """A leave built on the invite alone: only this server will ever see it."""
        leave_content = dict(content)
        leave_content["membership"] = "leave"
        return build_event(
            room_version=invite.room_version,
            type=MEMBER,
            sender=user_id,
            room_id=invite.room_id,
            content=leave_content,
            state_key=user_id,
            prev_event_ids=[invite.event_id],
            auth_event_ids=[invite.event_id],
            depth=invite.depth + 1,
            origin_server_ts=self.clock.time_msec(),
            server_name=self.server_name,
            signing_key=self.signing_key,
        )

    # -- invite ----------------------------------------------------------------------------------
    async def invite(self, event: Event) -> Event:
        """``event`` (our invite of another server's user) with that server's signature."""
        target = event.state_key or ""
        destination = server_of(target)
        body = {
            "room_version": event.room_version.identifier,
            "event": event.get_pdu_json(),
            "invite_room_state": await self._invite_room_state(event),
        }
        try:
            answer = await self.client.put_json(
                destination, f"{FED_V2}/invite/{_q(event.room_id)}/{_q(event.event_id)}", body
            )
        except HttpResponseError as e:
            raise _passthrough(e) from None
        except RequestSendFailed as e:
            raise RemoteJoinError(f"Could not reach {destination}: {e}") from None
        returned = answer.get("event") if isinstance(answer, dict) else None
        try:
            theirs = parse_pdu(event.room_version, returned)
        except PduError as e:
            raise RemoteJoinError(f"{destination} returned a bad invite: {e}") from None
        if theirs.event_id != event.event_id:
            raise RemoteJoinError(f"{destination} returned another event")
        signatures = theirs.signatures.get(destination)
        if not isinstance(signatures, dict) or not signatures:
            raise RemoteJoinError(f"{destination} did not sign the invite")
        valid_at = event.origin_server_ts if event.room_version.enforce_key_validity else None
        try:
            keys = await self.keyring.get_event_keys(destination, list(signatures), valid_at)
            if not keys:
                raise SignatureVerifyError(f"no usable key of {destination}")
            verify_event_signature(event.room_version, theirs.as_dict_ref(), destination, keys)
        except Exception as e:
            raise RemoteJoinError(f"{destination}'s signature on the invite is bad: {e}") from None
        pdu = event.get_dict()
        pdu.setdefault("signatures", {})[destination] = dict(signatures)
        signed = make_event_from_dict(
            pdu, event.room_version, event.format_version, event.internal_metadata
        )
        return signed

    async def _invite_room_state(self, event: Event) -> list[dict[str, Any]]:
        events = await room_state_for_stripping(self.stores, event.room_id, event.sender)
        return [stripped(e) for e in events]
