"""``IdleWriterAdvancer``: keeps an idle events writer's position moving.

With several events writers a client token is a vector whose minimum is the
slowest writer's position. A writer whose rooms are quiet would hold that
minimum back forever, and every /sync would read (and discard) ever longer
ranges. Every ``interval`` seconds, a writer with nothing in flight moves its
position up to the shared sequence and publishes it (a POSITION without rows,
see ``LocalEventWriter.advance_if_idle``).
"""

from __future__ import annotations

from typing import Any

from atrium.handlers.event_writer import LocalEventWriter
from atrium.util.clock import Clock


class IdleWriterAdvancer:
    def __init__(
        self, writer: LocalEventWriter, id_gen: Any, clock: Clock, interval: float = 1.0
    ) -> None:
        self.writer = writer
        self.id_gen = id_gen
        self.clock = clock
        self.interval = interval
        self._loop: Any = None

    async def start(self) -> None:
        self._loop = self.clock.looping_call(self.tick, self.interval)

    async def tick(self) -> None:
        await self.writer.advance_if_idle(self.id_gen)

    async def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
