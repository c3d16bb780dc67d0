"""Pagination tokens of /messages and /context, as clients see them.

- ``t<topological_ordering>-<stream_ordering>``: a topological position in
  one room (see ``atrium.storage.stores.pagination.RoomPosition``); what
  /messages and /context hand out.
- ``s...``: a /sync ``prev_batch``/``next_batch`` (a ``StreamToken``); it
  denotes an events stream position and is converted, per room, to the
  topological position of the last event at or before it.

Anything else is M_INVALID_PARAM.
"""

from __future__ import annotations

import re

from atrium.errors import InvalidParam
from atrium.storage.stores.pagination import RoomPosition
from atrium.sync.token import StreamToken

_TOPOLOGICAL = re.compile(r"t(-?[0-9]{1,19})-(-?[0-9]{1,19})")
# Orderings are BIGINT columns; a larger number could not even be compared
# on SQLite (it refuses Python ints beyond 64 bits).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def in_int64(*values: int) -> bool:
    return all(INT64_MIN <= v <= INT64_MAX for v in values)


PaginationToken = RoomPosition | StreamToken


def format_position(position: RoomPosition) -> str:
    return f"t{position.topological}-{position.stream}"


def parse_pagination_token(text: str, param: str = "from") -> PaginationToken:
    """A topological position or a stream token; M_INVALID_PARAM otherwise."""
    match = _TOPOLOGICAL.fullmatch(text)
    if match is not None:
        position = RoomPosition(int(match.group(1)), int(match.group(2)))
        if in_int64(position.topological, position.stream):
            return position
    elif text.startswith("s"):
        try:
            token = StreamToken.parse(text)
        except InvalidParam:
            pass
        else:
            if in_int64(token.events.stream, *token.events.instance_positions.values()):
                return token
    raise InvalidParam(f"Invalid pagination token in {param!r}: {text[:100]!r}")
