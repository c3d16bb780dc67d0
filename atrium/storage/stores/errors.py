"""Errors raised by the stores."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of errors the stores raise on purpose."""


class NotFoundError(StoreError):
    """The thing asked for (event, room, state group) is not in the database."""


class UnsupportedRoomVersionError(StoreError):
    """A stored room version identifier this server does not implement."""
