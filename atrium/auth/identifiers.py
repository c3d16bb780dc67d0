"""Small helpers on Matrix identifiers used by the authorization rules.

Only what the rules need: the server name part of a user, room or event ID
(spec appendices "Common Identifier Format") and a lenient user ID check for
the keys of `m.room.power_levels` `users`.
"""

from __future__ import annotations


def domain_of(identifier: str) -> str | None:
    """The server name after the first ':' of a sigil-prefixed ID, or None.

    The localpart of historical user IDs may hold almost anything except
    ':', so everything after the first ':' is the server name.
    """
    if not isinstance(identifier, str):
        return None
    _, sep, domain = identifier.partition(":")
    if not sep or not domain:
        return None
    return domain


def is_valid_user_id(user_id: object) -> bool:
    """'@localpart:server' with a non-empty server name.

    Deliberately lenient (historical user IDs allowed any localpart): power
    level events in existing rooms must keep passing auth on every server.
    """
    return isinstance(user_id, str) and user_id.startswith("@") and domain_of(user_id) is not None
