"""Applying stream rows on a process, in order: invalidate, advance, notify."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import Gauge
from twisted.internet import defer

from atrium.replication.streams import Stream, StreamRow

logger = logging.getLogger(__name__)

STREAM_POSITION = Gauge(
    "atrium_stream_position",
    "Position this process has applied, per stream and writer",
    ["stream", "writer"],
)
# Lag of a process behind a writer = this minus atrium_stream_position (same labels).
STREAM_WRITER_POSITION = Gauge(
    "atrium_stream_writer_position",
    "The writer's position as last advertised to this process (its POSITION commands),"
    " per stream and writer; never below what this process has applied",
    ["stream", "writer"],
)


class ReplicationDataHandler:
    """Holds this process's applied position of every stream.

    ``on_rows`` is the single entry point for new rows, whether written
    locally or received from another process: it runs the three steps in
    order for the whole batch (rows sharing one token arrive together).
    """

    def __init__(
        self, streams: dict[str, Stream], invalidate: Callable[[str, Any], None], notifier: Any
    ) -> None:
        self.streams = streams
        self._invalidate = invalidate
        self.notifier = notifier
        # stream -> writer instance -> applied position
        self.positions: dict[str, dict[str, int]] = {name: {} for name in streams}
        # stream -> writer instance -> the furthest position the writer has
        # told us about (heard on the bus before the rows are applied), so
        # ``lag()`` sees a process whose processing falls behind.
        self.advertised: dict[str, dict[str, int]] = {name: {} for name in streams}
        # Read-your-writes: (stream, instance, token, deferred) waiting for a position.
        self._waiters: list[tuple[str, str, int, defer.Deferred[None]]] = []

    def set_position(self, stream: str, instance: str, token: int) -> None:
        current = self.positions.setdefault(stream, {}).get(instance)
        if current is None or token > current:
            self.positions[stream][instance] = token
            STREAM_POSITION.labels(stream, instance).set(token)
            self.note_advertised(stream, instance, token)
            if self._waiters:
                self._wake_waiters()

    def _wake_waiters(self) -> None:
        still = []
        for stream, instance, token, d in self._waiters:
            if self.get_position(stream, instance) >= token:
                if not d.called:
                    d.callback(None)
            elif not d.called:
                still.append((stream, instance, token, d))
        self._waiters = still

    async def wait_for_position(self, stream: str, instance: str, token: int) -> None:
        """Return once this process has applied ``token`` of ``instance``'s stream.

        A request that wrote through another process waits here before
        answering, so the client's next read on this process sees its write.
        """
        if self.get_position(stream, instance) >= token:
            return
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append((stream, instance, token, d))
        await d

    def note_advertised(self, stream: str, instance: str, token: int) -> None:
        """The writer ``instance`` says its ``stream`` has reached ``token``."""
        current = self.advertised.setdefault(stream, {}).get(instance)
        if current is None or token > current:
            self.advertised[stream][instance] = token
            STREAM_WRITER_POSITION.labels(stream, instance).set(token)

    def lags(self) -> list[tuple[str, str, int, int]]:
        """(stream, writer, applied position, writer's advertised position) for
        every writer this process knows, sorted; lag is the difference."""
        result = []
        for stream in sorted(set(self.positions) | set(self.advertised)):
            writers = set(self.positions.get(stream, {})) | set(self.advertised.get(stream, {}))
            for writer in sorted(writers):
                applied = self.get_position(stream, writer)
                advertised = max(self.advertised.get(stream, {}).get(writer, 0), applied)
                result.append((stream, writer, applied, advertised))
        return result

    def get_position(self, stream: str, instance: str) -> int:
        return self.positions.get(stream, {}).get(instance, 0)

    def min_position(self, stream: str) -> int:
        values = self.positions.get(stream, {}).values()
        return min(values) if values else 0

    def max_position(self, stream: str) -> int:
        values = self.positions.get(stream, {}).values()
        return max(values) if values else 0

    async def on_rows(
        self, stream_name: str, instance: str, token: int, rows: Sequence[StreamRow]
    ) -> None:
        stream = self.streams.get(stream_name)
        if stream is None:
            logger.warning("rows for unknown stream %r ignored", stream_name)
            return
        # 1. Caches first (in-memory copies included): nothing woken below
        # may read a stale entry.
        stream.apply_rows(instance, token, rows)
        effects = await stream.effects(rows)
        for cache_name, keys in effects.invalidations:
            if keys is None:
                self._invalidate(cache_name, None)
            else:
                for key in keys:
                    self._invalidate(cache_name, key)
        # 2. Then the position readers build tokens from.
        self.set_position(stream_name, instance, token)
        # 3. Only now wake long-polls.
        self.notifier.on_new_data(stream_name, token, effects.users, effects.rooms)
