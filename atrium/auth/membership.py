"""The auth rules for `m.room.member` events (join, invite, leave, ban, knock),
third party invites and restricted joins.

Spec: rooms/v1 rule 5, rooms/v3-v7 rule 5/4, rooms/v8-v11 rule 4, and
server-server API "Third-party invites" / "Verifying the invite".
"""

from __future__ import annotations

from typing import Any

from signedjson.key import decode_verify_key_bytes
from signedjson.sign import SignatureVerifyException, verify_signed_json
from unpaddedbase64 import decode_base64

from atrium.auth.errors import AuthError
from atrium.auth.identifiers import domain_of
from atrium.auth.power_levels import (
    BAN_DEFAULT,
    INVITE_DEFAULT,
    KICK_DEFAULT,
    StateMap,
    get_named_level,
    get_user_power_level,
    room_creator,
)
from atrium.events.event import Event
from atrium.events.room_versions import RoomVersion

JOIN, INVITE, LEAVE, BAN, KNOCK = "join", "invite", "leave", "ban", "knock"


def get_membership(auth_state: StateMap, user_id: str) -> str:
    """A user's membership in the state; no member event means `leave`."""
    member = auth_state.get(("m.room.member", user_id))
    if member is None:
        return LEAVE
    membership = member.membership
    return LEAVE if membership is None else membership


def get_join_rule(auth_state: StateMap) -> str | None:
    """The room's join rule; `invite` when there is no join rules event or
    it has no `join_rule` (the most closed choice, and what other servers do)."""
    event = auth_state.get(("m.room.join_rules", ""))
    if event is None:
        return INVITE
    rule = event.content.get("join_rule", INVITE)
    return rule if isinstance(rule, str) else None


def check_membership_event(room_version: RoomVersion, event: Event, auth_state: StateMap) -> None:
    """Allow or refuse (AuthError) an m.room.member event against ``auth_state``.

    ``auth_state`` must hold the m.room.create event (the caller checks).
    """
    content = event.content
    target = event.state_key
    if target is None:
        raise AuthError("m.room.member event has no state_key")
    if "membership" not in content:
        raise AuthError("m.room.member event has no membership in its content")

    if room_version.restricted_join_rule and "join_authorised_via_users_server" in content:
        _check_authorising_server_signed(content["join_authorised_via_users_server"], event)

    membership = content["membership"]
    if membership == JOIN:
        _check_join(room_version, event, target, auth_state)
    elif membership == INVITE:
        _check_invite(event, target, auth_state)
    elif membership == LEAVE:
        _check_leave(room_version, event, target, auth_state)
    elif membership == BAN:
        _check_ban(event, target, auth_state)
    elif membership == KNOCK and room_version.knock_join_rule:
        _check_knock(room_version, event, target, auth_state)
    elif membership == KNOCK:
        raise AuthError(f"knocking is not supported in room version {room_version.identifier}")
    else:
        raise AuthError(f"unknown membership {membership!r}")


def _check_authorising_server_signed(authoriser: Any, event: Event) -> None:
    """Rule 4.2 (v8+): the join must be signed by the authorising user's server.

    Only the presence of a signature from that server is checked here. Every
    signature on a PDU is verified cryptographically on receipt (server-server
    API "Checks performed on receipt of a PDU", step 2) before auth runs, so
    a signature that is present at this point is a valid one.
    """
    server = domain_of(authoriser) if isinstance(authoriser, str) else None
    if server is None:
        raise AuthError(f"join_authorised_via_users_server is not a valid user ID: {authoriser!r}")
    signatures = event.signatures.get(server) if isinstance(event.signatures, dict) else None
    if not isinstance(signatures, dict) or not signatures:
        raise AuthError(
            f"event is not signed by {server}, the server of join_authorised_via_users_server"
        )


def _check_join(room_version: RoomVersion, event: Event, target: str, auth_state: StateMap) -> None:
    create_event = auth_state[("m.room.create", "")]
    # The creator's own first join, straight after the create event.
    prev_ids = event.prev_event_ids()
    if (
        len(prev_ids) == 1
        and prev_ids[0] == create_event.event_id
        and target == room_creator(create_event)
    ):
        return

    sender = event.sender
    if sender != target:
        raise AuthError("sender cannot join on behalf of another user")
    membership = get_membership(auth_state, sender)
    if membership == BAN:
        raise AuthError("sender is banned from the room")

    join_rule = get_join_rule(auth_state)
    invite_like = {INVITE, KNOCK} if room_version.knock_join_rule else {INVITE}
    restricted_like: set[str] = set()
    if room_version.restricted_join_rule:
        restricted_like.add("restricted")
    if room_version.knock_restricted_join_rule:
        restricted_like.add("knock_restricted")

    if join_rule in invite_like:
        if membership in (INVITE, JOIN):
            return
        raise AuthError(f"join rule is {join_rule} and sender is not invited")
    if join_rule in restricted_like:
        if membership in (INVITE, JOIN):
            return
        _check_restricted_join_authoriser(event, auth_state)
        return
    if join_rule == "public":
        return
    raise AuthError(
        f"join rule {join_rule!r} does not allow joining in room version {room_version.identifier}"
    )


def _check_restricted_join_authoriser(event: Event, auth_state: StateMap) -> None:
    """Rule 4.3.5.2: the authorising user must be joined and able to invite."""
    authoriser = event.content.get("join_authorised_via_users_server")
    if not isinstance(authoriser, str):
        raise AuthError("join to a restricted room without join_authorised_via_users_server")
    if get_membership(auth_state, authoriser) != JOIN:
        raise AuthError(f"authorising user {authoriser} is not joined to the room")
    level = get_user_power_level(authoriser, auth_state)
    invite_level = get_named_level(auth_state, "invite", INVITE_DEFAULT)
    if level < invite_level:
        raise AuthError(
            f"authorising user {authoriser} has power level {level}, below the invite level {invite_level}"
        )


def _check_invite(event: Event, target: str, auth_state: StateMap) -> None:
    if "third_party_invite" in event.content:
        _check_third_party_invite(event, target, auth_state)
        return
    sender = event.sender
    if get_membership(auth_state, sender) != JOIN:
        raise AuthError("sender is not joined to the room")
    target_membership = get_membership(auth_state, target)
    if target_membership == JOIN:
        raise AuthError("target user is already joined to the room")
    if target_membership == BAN:
        raise AuthError("target user is banned from the room")
    level = get_user_power_level(sender, auth_state)
    invite_level = get_named_level(auth_state, "invite", INVITE_DEFAULT)
    if level < invite_level:
        raise AuthError(f"sender's power level {level} is below the invite level {invite_level}")


def _check_third_party_invite(event: Event, target: str, auth_state: StateMap) -> None:
    """Rule 4.4.1 (v8+ numbering): an invite that redeems an m.room.third_party_invite."""
    if get_membership(auth_state, target) == BAN:
        raise AuthError("target user is banned from the room")
    third_party_invite = event.content["third_party_invite"]
    signed = third_party_invite.get("signed") if isinstance(third_party_invite, dict) else None
    if not isinstance(signed, dict):
        raise AuthError("third_party_invite has no signed block")
    mxid, token = signed.get("mxid"), signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        raise AuthError("third_party_invite signed block lacks mxid or token")
    if mxid != target:
        raise AuthError("third_party_invite mxid does not match the state_key")
    invite_event = auth_state.get(("m.room.third_party_invite", token))
    if invite_event is None:
        raise AuthError("no m.room.third_party_invite event for the token of third_party_invite")
    if invite_event.sender != event.sender:
        raise AuthError("sender is not the sender of the m.room.third_party_invite event")
    if not _signed_by_any_public_key(signed, _third_party_public_keys(invite_event)):
        raise AuthError(
            "third_party_invite is not signed by any key of the m.room.third_party_invite event"
        )


def _third_party_public_keys(invite_event: Event) -> list[str]:
    """`public_key` and every `public_keys[].public_key` of the invite event."""
    keys: list[str] = []
    content = invite_event.content
    if isinstance(content.get("public_key"), str):
        keys.append(content["public_key"])
    public_keys = content.get("public_keys")
    if isinstance(public_keys, list):
        for entry in public_keys:
            if isinstance(entry, dict) and isinstance(entry.get("public_key"), str):
                keys.append(entry["public_key"])
    return keys


def _signed_by_any_public_key(signed: dict[str, Any], public_keys: list[str]) -> bool:
    """True if any ed25519 signature in ``signed`` verifies with any of the keys.

    Keys are unpadded base64 in either alphabet (decode_base64 takes both).
    The key ID of the signature names the key version; the key bytes come
    from the m.room.third_party_invite event.
    """
    signatures = signed.get("signatures")
    if not isinstance(signatures, dict):
        return False
    for server_name, server_signatures in signatures.items():
        if not isinstance(server_signatures, dict):
            continue
        for key_id in server_signatures:
            if not isinstance(key_id, str) or not key_id.startswith("ed25519:"):
                continue
            for public_key in public_keys:
                try:
                    verify_key = decode_verify_key_bytes(key_id, decode_base64(public_key))
                    verify_signed_json(signed, server_name, verify_key)
                except (SignatureVerifyException, ValueError, TypeError, KeyError):
                    # Undecodable key or signature, wrong key: try the next.
                    continue
                return True
    return False


def _check_leave(
    room_version: RoomVersion, event: Event, target: str, auth_state: StateMap
) -> None:
    sender = event.sender
    sender_membership = get_membership(auth_state, sender)
    if sender == target:
        # Leaving, rejecting an invite, or (v7+) retracting a knock.
        allowed = {INVITE, JOIN, KNOCK} if room_version.knock_join_rule else {INVITE, JOIN}
        if sender_membership in allowed:
            return
        raise AuthError(f"sender cannot leave with current membership {sender_membership}")
    if sender_membership != JOIN:
        raise AuthError("sender is not joined to the room")
    level = get_user_power_level(sender, auth_state)
    target_level = get_user_power_level(target, auth_state)
    ban_level = get_named_level(auth_state, "ban", BAN_DEFAULT)
    if get_membership(auth_state, target) == BAN and level < ban_level:
        raise AuthError(
            f"sender's power level {level} is below the ban level {ban_level} needed to unban"
        )
    kick_level = get_named_level(auth_state, "kick", KICK_DEFAULT)
    if level < kick_level:
        raise AuthError(f"sender's power level {level} is below the kick level {kick_level}")
    if target_level >= level:
        raise AuthError(
            f"target user's power level {target_level} is not below the sender's power level {level}"
        )


def _check_ban(event: Event, target: str, auth_state: StateMap) -> None:
    sender = event.sender
    if get_membership(auth_state, sender) != JOIN:
        raise AuthError("sender is not joined to the room")
    level = get_user_power_level(sender, auth_state)
    ban_level = get_named_level(auth_state, "ban", BAN_DEFAULT)
    if level < ban_level:
        raise AuthError(f"sender's power level {level} is below the ban level {ban_level}")
    target_level = get_user_power_level(target, auth_state)
    if target_level >= level:
        raise AuthError(
            f"target user's power level {target_level} is not below the sender's power level {level}"
        )


def _check_knock(
    room_version: RoomVersion, event: Event, target: str, auth_state: StateMap
) -> None:
    join_rule = get_join_rule(auth_state)
    knockable = {KNOCK, "knock_restricted"} if room_version.knock_restricted_join_rule else {KNOCK}
    if join_rule not in knockable:
        raise AuthError(
            f"join rule {join_rule!r} does not allow knocking in room version {room_version.identifier}"
        )
    if event.sender != target:
        raise AuthError("sender cannot knock on behalf of another user")
    membership = get_membership(auth_state, event.sender)
    if membership in (BAN, INVITE, JOIN):
        raise AuthError(f"sender cannot knock with current membership {membership}")
