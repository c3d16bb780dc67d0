"""The exception raised when an event fails the authorization rules."""

from __future__ import annotations


class AuthError(Exception):
    """An event is not allowed by the authorization rules.

    ``reason`` says which rule refused it, in words a server admin (and a
    test) can read, e.g. "sender is not joined to the room".
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
