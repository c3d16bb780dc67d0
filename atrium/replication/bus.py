"""The bus that carries replication commands between processes.

A bus delivers *messages* (one or more command lines sent together, in
order) to every process joined to it, the sender included: each process
hears its own messages and ignores the rows it sent itself. A message is
delivered whole or not at all, which is why a writer sends an update's RDATA
rows and its POSITION as one message (see ``ReplicationCommandHandler``).

``InProcessBus`` is the embedded default and the test double: every
``BusConnection`` made from one InProcessBus hears every other, so several
HomeServer-like objects in one test process replicate exactly as they would
over Redis (``atrium.replication.redis.RedisBus``).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Sequence

from atrium.replication.commands import Command, parse_lines

logger = logging.getLogger(__name__)


class BusListener(abc.ABC):
    """What a bus connection reports to (the process's command handler)."""

    @abc.abstractmethod
    def on_commands(self, commands: Sequence[Command]) -> None:
        """One message's commands, in order. Must not block: queue and return."""

    @abc.abstractmethod
    def on_connected(self, reconnect: bool) -> None:
        """The link is (again) up; after a reconnect, messages may have been missed."""


class BusConnection(abc.ABC):
    """One process's link to the bus."""

    listener: BusListener | None = None

    def set_listener(self, listener: BusListener) -> None:
        self.listener = listener

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect and subscribe; returns once messages are being received."""

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    def send(self, commands: Sequence[Command]) -> None:
        """Send ``commands`` as one message (all delivered, in order, or none)."""

    def is_connected(self) -> bool:
        """Whether messages are currently being sent and received."""
        return True

    def _deliver(self, text: str) -> None:
        """Parse a received message (bad lines are logged and dropped) and hand it on."""
        commands = parse_lines(text)
        if commands and self.listener is not None:
            try:
                self.listener.on_commands(commands)
            except Exception:
                logger.exception("Replication listener failed on a message")


class InProcessBus:
    """A bus inside one Python process; ``connect()`` makes one process's link."""

    def __init__(self) -> None:
        self._connections: list[InProcessConnection] = []
        # Tests can watch every message (e.g. to assert what was sent).
        self.observers: list[Callable[[str], None]] = []

    def connect(self) -> InProcessConnection:
        return InProcessConnection(self)

    def _publish(self, text: str) -> None:
        for observer in self.observers:
            observer(text)
        for connection in list(self._connections):
            connection._deliver(text)


class InProcessConnection(BusConnection):
    def __init__(self, bus: InProcessBus) -> None:
        self.bus = bus
        self.started = False

    async def start(self) -> None:
        if not self.started:
            self.started = True
            self.bus._connections.append(self)
            if self.listener is not None:
                self.listener.on_connected(reconnect=False)

    async def stop(self) -> None:
        if self.started:
            self.started = False
            self.bus._connections.remove(self)

    def is_connected(self) -> bool:
        return self.started and self in self.bus._connections

    def send(self, commands: Sequence[Command]) -> None:
        if not commands:
            return
        if not self.started or self not in self.bus._connections:
            # Like a dropped Redis link: the message is lost; receivers see a
            # gap at the next POSITION (or catch up on REPLICATE) and fetch.
            logger.debug("in-process bus connection not started; message dropped")
            return
        self.bus._publish("\n".join(c.to_line() for c in commands))

    def simulate_disconnect(self) -> None:
        """Tests: the link drops; messages sent meanwhile never arrive."""
        if self in self.bus._connections:
            self.bus._connections.remove(self)

    def simulate_reconnect(self, notify: bool = True) -> None:
        """Tests: the link is back; ``notify`` runs the reconnect catch-up (REPLICATE)."""
        if self not in self.bus._connections:
            self.bus._connections.append(self)
        if notify and self.listener is not None:
            self.listener.on_connected(reconnect=True)
