"""What every stream is: a name, its writers, a position and typed rows."""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import Any, ClassVar

import attrs


@attrs.frozen
class StreamRow:
    """Base of every stream's row type (frozen, JSON-serialisable fields)."""

    def to_json(self) -> list[Any]:
        return list(attrs.astuple(self, recurse=False))

    @classmethod
    def from_json(cls, data: list[Any]) -> StreamRow:
        return cls(*data)


@attrs.frozen
class StreamUpdates:
    """A page of rows: ``rows`` are (token, row) in order; ``upto_token`` is
    how far the page reaches; ``limited`` says there are more after it."""

    rows: list[tuple[int, StreamRow]]
    upto_token: int
    limited: bool


@attrs.frozen
class Effects:
    """What applying some rows means for this process."""

    # (cache name, keys or None for all) to invalidate before anything else.
    invalidations: list[tuple[str, list[tuple[Any, ...]] | None]] = attrs.field(factory=list)
    # Who to wake once the position has advanced.
    users: set[str] = attrs.field(factory=set)
    rooms: set[str] = attrs.field(factory=set)


class Stream(abc.ABC):
    """A replication stream.

    Subclasses set NAME and ROW_TYPE and implement ``get_updates`` (reading
    rows between two tokens, for catch-up) and ``effects`` (what rows mean).
    The stream's current position on this process is held by the
    ReplicationDataHandler, not here.
    """

    NAME: ClassVar[str]
    ROW_TYPE: ClassVar[type[StreamRow]]
    # The stream key in client StreamTokens, or None if clients never see it.
    TOKEN_KEY: ClassVar[str | None] = None
    # True for streams that live only in their writer's memory (typing):
    # other processes fetch missed rows from the writer over the
    # authenticated HTTP replication endpoint, not from the database.
    IN_MEMORY: ClassVar[bool] = False

    def __init__(self, hs: Any) -> None:
        self.hs = hs

    @abc.abstractmethod
    async def get_updates(
        self, instance_name: str, from_token: int, to_token: int, limit: int
    ) -> StreamUpdates:
        """Rows written by ``instance_name`` with from_token < token <= to_token."""

    @abc.abstractmethod
    def current_token(self, instance_name: str) -> int:
        """The writer's own position (only meaningful on that writer)."""

    async def stored_positions(self) -> dict[str, int] | None:
        """Each writer's persisted position, for a process starting up; None for
        streams not kept in the database (their positions come from the writers)."""
        return None

    def apply_rows(self, instance_name: str, token: int, rows: Iterable[StreamRow]) -> None:
        """Update in-memory state kept from this stream's rows (before ``effects``).

        For streams whose data lives only in memory (typing): a process that
        does not write the stream keeps its copy of the writer's state here.
        Called for every update, this process's own included.
        """
        return None

    async def effects(self, rows: Iterable[StreamRow]) -> Effects:
        """Cache invalidations and notifier targets for a batch of rows."""
        return Effects()

    def parse_row(self, data: list[Any]) -> StreamRow:
        return self.ROW_TYPE.from_json(data)
