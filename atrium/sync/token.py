"""``StreamToken``: a position in every stream a client follows, as one string.

The token a client gets from /sync (``next_batch``) is the position of each
stream this server had *processed* (caches invalidated) when the response was
built. The text form is ``s`` followed by the positions joined with ``_`` in
the order of ``STREAM_KEYS``; unknown trailing parts are ignored and missing
ones read as 0, so tokens survive adding a stream.

The events position may be a vector when several event writers run
(``m<min>~<instance>.<pos>~...``): every event at or below ``min`` is
included, plus each writer's events up to its own position. Instance names
are escaped in the text (``-XX``, the hex of each byte that is not a letter
or digit) because worker names may contain ``_``, ``~`` or ``.``, which
separate the parts of a token.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from atrium.errors import InvalidParam

# Streams a client token covers, in their fixed order in the text form.
STREAM_KEYS = (
    "events",
    "presence",
    "typing",
    "receipts",
    "account_data",
    "to_device",
    "device_lists",
)


_ESCAPED = re.compile(r"-([0-9A-F]{2})")


def _escape_instance(name: str) -> str:
    return "".join(
        chr(b) if chr(b).isascii() and chr(b).isalnum() else f"-{b:02X}"
        for b in name.encode("utf-8")
    )


def _unescape_instance(text: str) -> str:
    if not all(c.isascii() and (c.isalnum() or c == "-") for c in text):
        raise ValueError(f"bad instance name in token: {text!r}")
    raw = _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), text)
    if "-" in _ESCAPED.sub("", text):
        raise ValueError(f"bad escape in token: {text!r}")
    return raw.encode("latin-1").decode("utf-8")


@attrs.frozen
class RoomStreamToken:
    """Position in the events stream: a minimum plus writers ahead of it."""

    stream: int
    instance_positions: Mapping[str, int] = attrs.field(
        factory=dict, converter=lambda m: dict(sorted(m.items()))
    )

    def __hash__(self) -> int:
        return hash((self.stream, tuple(self.instance_positions.items())))

    @property
    def max_position(self) -> int:
        return max([self.stream, *self.instance_positions.values()])

    def position_of(self, instance: str) -> int:
        return self.instance_positions.get(instance, self.stream)

    def includes(self, stream_ordering: int, instance_name: str) -> bool:
        """Whether the event ``instance_name`` persisted at ``stream_ordering`` is in this token.

        An event of writer W is covered iff its ordering is at most W's
        position: with several writers, orderings of different writers
        interleave and the maximum position alone says nothing exact.
        """
        return stream_ordering <= self.position_of(instance_name)

    def is_ambiguous(self, stream_ordering: int) -> bool:
        """True when ``includes`` depends on which writer persisted the event."""
        return self.stream < stream_ordering <= self.max_position

    def join(self, other: RoomStreamToken) -> RoomStreamToken:
        """The token covering exactly what either token covers (per-writer maximum)."""
        stream = max(self.stream, other.stream)
        instances = set(self.instance_positions) | set(other.instance_positions)
        positions = {i: max(self.position_of(i), other.position_of(i)) for i in instances}
        return RoomStreamToken(stream, {i: p for i, p in positions.items() if p > stream})

    def covers(self, other: RoomStreamToken) -> bool:
        """True when every event ``other`` covers is covered by this token."""
        instances = set(self.instance_positions) | set(other.instance_positions)
        return self.stream >= other.stream and all(
            self.position_of(i) >= other.position_of(i) for i in instances
        )

    def is_after(self, other: RoomStreamToken) -> bool:
        """True when this token has seen anything ``other`` has not."""
        if self.stream > other.max_position:
            return True
        instances = set(self.instance_positions) | set(other.instance_positions)
        return self.stream > other.stream or any(
            self.position_of(i) > other.position_of(i) for i in instances
        )

    def to_string(self) -> str:
        if not self.instance_positions:
            return str(self.stream)
        parts = [f"m{self.stream}"] + [
            f"{_escape_instance(i)}.{p}"
            for i, p in self.instance_positions.items()
            if p > self.stream
        ]
        return "~".join(parts)

    @classmethod
    def parse(cls, text: str) -> RoomStreamToken:
        if text.startswith("m"):
            head, *rest = text[1:].split("~")
            positions = {}
            for part in rest:
                inst, dot, pos = part.rpartition(".")
                if not dot or not inst:
                    raise ValueError(f"bad writer position in token: {part!r}")
                positions[_unescape_instance(inst)] = int(pos)
            return cls(int(head), positions)
        return cls(int(text))


@attrs.frozen
class StreamToken:
    events: RoomStreamToken
    presence: int = 0
    typing: int = 0
    receipts: int = 0
    account_data: int = 0
    to_device: int = 0
    device_lists: int = 0

    def to_string(self) -> str:
        values = [self.events.to_string()] + [str(getattr(self, k)) for k in STREAM_KEYS[1:]]
        return "s" + "_".join(values)

    @classmethod
    def parse(cls, text: str) -> StreamToken:
        try:
            if not text.startswith("s"):
                raise ValueError
            parts = text[1:].split("_")
            events = RoomStreamToken.parse(parts[0])
            others = [int(p) for p in parts[1 : len(STREAM_KEYS)]]
            others += [0] * (len(STREAM_KEYS) - 1 - len(others))
            if min([events.stream, *others]) < 0:
                raise ValueError
        except (ValueError, IndexError):
            raise InvalidParam(f"Invalid stream token {text[:100]!r}") from None
        return cls(events, *others)

    def copy_and_replace(self, key: str, value: Any) -> StreamToken:
        return attrs.evolve(self, **{key: value})

    def get(self, key: str) -> Any:
        return getattr(self, key)

    def join(self, other: StreamToken) -> StreamToken:
        """Every stream at the later of the two positions (events: per writer)."""
        others = [max(getattr(self, k), getattr(other, k)) for k in STREAM_KEYS[1:]]
        return StreamToken(self.events.join(other.events), *others)

    def covers(self, other: StreamToken) -> bool:
        """True when this token is at or past ``other`` in every stream."""
        return self.events.covers(other.events) and all(
            getattr(self, k) >= getattr(other, k) for k in STREAM_KEYS[1:]
        )

    def is_after(self, other: StreamToken) -> bool:
        if self.events.is_after(other.events):
            return True
        return any(getattr(self, k) > getattr(other, k) for k in STREAM_KEYS[1:])


START_TOKEN = StreamToken(RoomStreamToken(0))
