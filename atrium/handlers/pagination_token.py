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

PaginationToken = RoomPosition | StreamToken


def format_position(position: RoomPosition) -> str:
    return f"t{position.topological}-{position.stream}"


def parse_pagination_token(text: str, param: str = "from") -> PaginationToken:
    """A topological position or a stream token; M_INVALID_PARAM otherwise."""
    match = _TOPOLOGICAL.fullmatch(text)
    if match is not None:
        return RoomPosition(int(match.group(1)), int(match.group(2)))
    if text.startswith("s"):
        try:
            return StreamToken.parse(text)
        except InvalidParam:
            pass
    raise InvalidParam(f"Invalid pagination token in {param!r}: {text[:100]!r}")
