"""How a writer announces new rows of a stream it writes.

The rows are applied on this process (the same three steps as rows from
elsewhere: invalidate, advance, notify) and sent to the other processes over
the bus, if there is one. Callers publish a stream's updates in increasing
token order, each token being the stream position once its rows are visible
(never past a write still in flight); the bus keeps the call order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from atrium.replication.handler import ReplicationDataHandler
from atrium.replication.streams import StreamRow


class RowSender(Protocol):
    """Ships an update to the other processes (``ReplicationCommandHandler``).

    Must not block: it queues the update, keeping the order of calls.
    """

    def send_rows(
        self, stream_name: str, instance: str, token: int, rows: Sequence[StreamRow]
    ) -> None: ...


class StreamPublisher:
    def __init__(
        self, data_handler: ReplicationDataHandler, instance_name: str, bus: RowSender | None = None
    ) -> None:
        self.data_handler = data_handler
        self.instance_name = instance_name
        # Set by the composition root when other processes exist.
        self.bus = bus

    async def publish(self, stream_name: str, token: int, rows: Sequence[StreamRow]) -> None:
        # Queued for the bus first, so the other processes get updates in the
        # order publish() was called even when applying one here has to wait
        # (a stream's effects may read the database).
        if self.bus is not None:
            self.bus.send_rows(stream_name, self.instance_name, token, rows)
        await self.data_handler.on_rows(stream_name, self.instance_name, token, rows)
