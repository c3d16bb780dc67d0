"""Invites that redeem an m.room.third_party_invite: the `signed` block must
be signed by a key the m.room.third_party_invite event published (real
ed25519 signatures made with signedjson)."""

from __future__ import annotations

import pytest
from signedjson.key import encode_verify_key_base64, generate_signing_key, get_verify_key
from signedjson.sign import sign_json

from tests.auth.helpers import ALICE, BOB, check, every_version, rejection
from tests.support.events import standard_room

ID_SERVER = "id.example.org"
TOKEN = "abc123"


def _public_key(signing_key, urlsafe=False) -> str:
    encoded = encode_verify_key_base64(get_verify_key(signing_key))
    return encoded.replace("+", "-").replace("/", "_") if urlsafe else encoded


def _room(rv, invite_content=None, inviter=ALICE):
    """A room where ``inviter`` (joined) published a third party invite."""
    key = generate_signing_key("0")
    room = standard_room(rv, join_rule="invite", members=[ALICE])
    content = invite_content or {
        "display_name": "b...@example.com",
        "key_validity_url": "https://id",
        "public_key": _public_key(key),
    }
    room.send("m.room.third_party_invite", inviter, content, TOKEN)
    return room, key


def _signed(key, mxid=BOB, token=TOKEN, **extra):
    return sign_json({"mxid": mxid, "token": token, **extra}, ID_SERVER, key)


def _invite(room, third_party_invite, sender=ALICE, target=BOB):
    content = {"membership": "invite", "third_party_invite": third_party_invite}
    return room.build("m.room.member", sender, content, target)


@every_version
def test_invite_signed_by_the_published_key_is_allowed(rv):
    room, key = _room(rv)
    check(room, _invite(room, {"display_name": "b", "signed": _signed(key)}))


@every_version
def test_invite_signed_by_another_key_is_rejected(rv):
    room, _ = _room(rv)
    forged = _signed(generate_signing_key("0"))
    assert rejection(room, _invite(room, {"display_name": "b", "signed": forged})) == (
        "third_party_invite is not signed by any key of the m.room.third_party_invite event"
    )


@every_version
def test_signed_block_altered_after_signing_is_rejected(rv):
    room, key = _room(rv)
    signed = _signed(key, mxid="@mallory:other.org")
    signed["mxid"] = BOB
    assert rejection(room, _invite(room, {"display_name": "b", "signed": signed})) == (
        "third_party_invite is not signed by any key of the m.room.third_party_invite event"
    )


@every_version
def test_key_from_the_public_keys_list_is_accepted_in_url_safe_base64(rv):
    key = generate_signing_key("0")
    other = generate_signing_key("0")
    content = {
        "display_name": "b",
        "key_validity_url": "https://id",
        "public_key": _public_key(other),
        "public_keys": [
            {"public_key": "not base64!"},
            {"public_key": _public_key(key, urlsafe=True)},
        ],
    }
    room, _ = _room(rv, invite_content=content)
    check(room, _invite(room, {"display_name": "b", "signed": _signed(key)}))


@every_version
def test_signature_under_a_non_ed25519_key_id_is_ignored(rv):
    room, key = _room(rv)
    signed = _signed(key)
    signed["signatures"] = {
        ID_SERVER: {"curve25519:0": signed["signatures"][ID_SERVER]["ed25519:0"]}
    }
    assert rejection(room, _invite(room, {"display_name": "b", "signed": signed})) == (
        "third_party_invite is not signed by any key of the m.room.third_party_invite event"
    )


@every_version
def test_mxid_other_than_the_state_key_is_rejected(rv):
    room, key = _room(rv)
    event = _invite(room, {"display_name": "b", "signed": _signed(key, mxid="@mallory:other.org")})
    assert rejection(room, event) == "third_party_invite mxid does not match the state_key"


@every_version
def test_token_without_a_third_party_invite_event_is_rejected(rv):
    room, key = _room(rv)
    event = _invite(room, {"display_name": "b", "signed": _signed(key, token="unknown")})
    assert (
        rejection(room, event)
        == "no m.room.third_party_invite event for the token of third_party_invite"
    )


@every_version
def test_sender_other_than_the_third_party_invite_sender_is_rejected(rv):
    room, key = _room(rv)
    event = _invite(room, {"display_name": "b", "signed": _signed(key)}, sender=room.creator)
    assert (
        rejection(room, event) == "sender is not the sender of the m.room.third_party_invite event"
    )


@every_version
def test_banned_target_is_rejected(rv):
    room, key = _room(rv)
    room.member(BOB, "ban", sender=room.creator)
    event = _invite(room, {"display_name": "b", "signed": _signed(key)})
    assert rejection(room, event) == "target user is banned from the room"


@every_version
@pytest.mark.parametrize(
    "third_party_invite", [{"display_name": "b"}, {"signed": "x"}, "not an object"]
)
def test_missing_signed_block_is_rejected(rv, third_party_invite):
    room, _ = _room(rv)
    assert (
        rejection(room, _invite(room, third_party_invite))
        == "third_party_invite has no signed block"
    )


@every_version
@pytest.mark.parametrize("signed", [{"mxid": BOB}, {"token": TOKEN}, {"mxid": BOB, "token": 5}])
def test_signed_block_without_mxid_or_token_is_rejected(rv, signed):
    room, _ = _room(rv)
    assert rejection(room, _invite(room, {"display_name": "b", "signed": signed})) == (
        "third_party_invite signed block lacks mxid or token"
    )


@every_version
def test_third_party_invite_is_allowed_although_the_target_already_joined(rv):
    """Only a ban stops a third party invite (rule 4.4.1.1), not a join."""
    room, key = _room(rv)
    room.member(BOB, "invite", sender=ALICE)
    room.member(BOB, "join")
    check(room, _invite(room, {"display_name": "b", "signed": _signed(key)}))
