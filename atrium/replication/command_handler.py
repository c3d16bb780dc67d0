"""One process's end of the replication bus: what it sends and how it applies what it hears.

Sending. Everything goes through ONE outbound queue, in call order:
- an update of a stream this process writes (``send_rows``, called by the
  ``StreamPublisher`` after applying it locally) becomes one bus message:
  ``RDATA stream me batch row`` for every row but the last of the token,
  ``RDATA stream me <token> row`` for the last, then ``POSITION stream me
  <prev> <token>``, prev being the token of the previous update sent;
- queued caches-stream rows (``ReplicatingCacheInvalidator``) are written to
  the database and sent as soon as the queue reaches them, so an
  invalidation made before a write's events rows are published is always
  sent before them;
- the answer to REPLICATE: a POSITION for each stream this process writes,
  the caches stream first, read when the queue reaches it (so every caches
  row of an event announced is itself announced).

Receiving. Commands are processed one at a time, strictly in arrival order
(one loop for all streams), so rows of one stream are applied in stream
order and a caches row is applied before the events rows published after it.
RDATA rows of another process are held until that update's POSITION
``prev -> new`` (sent in the same message, so a message either arrives whole
or not at all). Then, per (stream, writer):
- no position known for that writer: for a database stream (positions of
  every writer with rows were loaded at start-up, before subscribing) the
  writer is new, so start from 0 and fetch all its rows; for an in-memory
  stream start at ``prev`` (nothing of it is cached here yet);
- applied position < ``prev``: rows were missed (a dropped link, a late
  start): fetch (applied, prev] with ``StreamFetcher`` and apply them first;
- apply the held rows token by token (``ReplicationDataHandler.on_rows``:
  invalidate, advance, notify, for each token's batch; a token the writer
  published out of order is applied without moving the position back); then
  advance to ``new``.
If a fetch keeps failing, the held rows are dropped and the position stays
put; the fetch is retried later (the next POSITION covers the dropped rows).

After (re)connecting, a process sends NAME and REPLICATE; every process
answers with POSITIONs, which run the same catch-up. The caches POSITION of
a writer comes before its other streams', so caches are caught up first.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any

import attrs
from prometheus_client import Counter
from twisted.internet import defer

from atrium.replication.bus import BusConnection, BusListener
from atrium.replication.client import StreamFetcher
from atrium.replication.commands import (
    ClearUserSyncCommand,
    Command,
    ErrorCommand,
    FederationAckCommand,
    NameCommand,
    PingCommand,
    PositionCommand,
    RdataCommand,
    ReplicateCommand,
    UserSyncCommand,
)
from atrium.replication.handler import ReplicationDataHandler
from atrium.replication.streams import Stream, StreamRow
from atrium.replication.streams.caches import CachesStream, ReplicatingCacheInvalidator
from atrium.util.clock import Clock

logger = logging.getLogger(__name__)

COMMANDS_SENT = Counter(
    "atrium_replication_commands_sent_total", "Replication commands sent, by command", ["command"]
)
COMMANDS_RECEIVED = Counter(
    "atrium_replication_commands_received_total",
    "Replication commands received, by command",
    ["command"],
)
GAPS_FETCHED = Counter(
    "atrium_replication_gaps_fetched_total",
    "Times missed rows were fetched to fill a gap, by stream",
    ["stream"],
)
ROWS_FETCHED = Counter(
    "atrium_replication_rows_fetched_total", "Rows fetched to fill gaps, by stream", ["stream"]
)

# Commands naming their sender: a process ignores its own.
_OWN_IGNORED = (UserSyncCommand, ClearUserSyncCommand, FederationAckCommand)

CommandListener = Callable[[Command], Awaitable[None] | None]


@attrs.frozen
class _Publish:
    stream_name: str
    token: int
    rows: Sequence[StreamRow]


@attrs.frozen
class _Send:
    commands: Sequence[Command]


class _FlushCaches:
    pass


class _Announce:
    pass


_FLUSH = _FlushCaches()
_ANNOUNCE = _Announce()


class ReplicationCommandHandler(BusListener):
    def __init__(
        self,
        *,
        instance_name: str,
        data_handler: ReplicationDataHandler,
        streams: Mapping[str, Stream],
        fetcher: StreamFetcher,
        clock: Clock,
        written_streams: Callable[[], Collection[str]],
        caches_writer: ReplicatingCacheInvalidator | None = None,
        fetch_limit: int = 500,
        retry_delays: Sequence[float] = (0.1, 0.5, 2.0),
        retry_later: float = 5.0,
    ) -> None:
        self.instance_name = instance_name
        self.data_handler = data_handler
        self.streams = streams
        self.fetcher = fetcher
        self.clock = clock
        self.written_streams = written_streams
        self.caches_writer = caches_writer
        self.fetch_limit = fetch_limit
        self.retry_delays = tuple(retry_delays)
        self.retry_later = retry_later
        self.connection: BusConnection | None = None
        self._outbound: collections.deque[Any] = collections.deque()
        self._outbound_running = False
        self._inbound: collections.deque[Command] = collections.deque()
        self._inbound_running = False
        self._inbound_scheduled = False
        # The token of the last update sent, per stream this process writes.
        self._last_sent: dict[str, int] = {}
        # (stream, instance) -> rows of a token whose last row has not come yet.
        self._batch: dict[tuple[str, str], list[StreamRow]] = {}
        # (stream, instance) -> complete tokens waiting for their POSITION.
        self._held: dict[tuple[str, str], list[tuple[int, list[StreamRow]]]] = {}
        self._listeners: dict[str, list[CommandListener]] = {}
        # Streams whose writers' positions were read from the database at start.
        self._loaded_streams: set[str] = set()
        # (stream, writer) pairs caught up to a POSITION heard since connecting.
        self._caught_up: set[tuple[str, str]] = set()
        if caches_writer is not None:
            caches_writer.on_pending = self._caches_pending

    # -- wiring ---------------------------------------------------------------------
    def attach(self, connection: BusConnection) -> None:
        """Send through ``connection`` and listen to it; call before it starts."""
        self.connection = connection
        connection.set_listener(self)
        for stream_name in self.written_streams():
            self._last_sent.setdefault(stream_name, self._own_position(stream_name))

    def _own_position(self, stream_name: str) -> int:
        if stream_name == CachesStream.NAME and self.caches_writer is not None:
            return self.caches_writer.current_token()
        return self.data_handler.get_position(stream_name, self.instance_name)

    def add_listener(self, command_name: str, listener: CommandListener) -> None:
        """Call ``listener(command)`` for every ``command_name`` heard (USER_SYNC...)."""
        self._listeners.setdefault(command_name, []).append(listener)

    # -- sending ----------------------------------------------------------------------
    def send_rows(
        self, stream_name: str, instance: str, token: int, rows: Sequence[StreamRow]
    ) -> None:
        """Publish an update this process made (already applied here)."""
        if instance != self.instance_name:
            raise ValueError(f"{self.instance_name} cannot publish rows as {instance}")
        self._enqueue(_Publish(stream_name, token, list(rows)))

    def send_command(self, *commands: Command) -> None:
        """Send commands (USER_SYNC, FEDERATION_ACK...) as one message, in queue order."""
        self._enqueue(_Send(commands))

    def _caches_pending(self) -> None:
        # One flush marker at the tail is enough: it takes every queued row.
        # Started on the next reactor turn (unless something is sent sooner),
        # so all the invalidations of one transaction share one write.
        if not self._outbound or self._outbound[-1] is not _FLUSH:
            self._enqueue(_FLUSH, start_now=False)

    def _enqueue(self, item: Any, start_now: bool = True) -> None:
        self._outbound.append(item)
        if start_now:
            self._start_outbound()
        else:
            self.clock.call_later(0, self._start_outbound)

    def _start_outbound(self) -> None:
        if not self._outbound_running and self._outbound:
            self._outbound_running = True
            defer.ensureDeferred(self._run_outbound())

    async def _run_outbound(self) -> None:
        try:
            while self._outbound:
                item = self._outbound.popleft()
                try:
                    await self._send_item(item)
                except Exception:
                    logger.exception("Sending replication item %r failed", item)
        finally:
            self._outbound_running = False

    async def _send_item(self, item: Any) -> None:
        if isinstance(item, _Publish):
            self._send(self._update_commands(item.stream_name, [(item.token, item.rows)]))
        elif isinstance(item, _Send):
            self._send(item.commands)
        elif item is _FLUSH:
            await self._flush_caches()
        elif item is _ANNOUNCE:
            await self._flush_caches()
            streams = sorted(self.written_streams(), key=lambda s: (s != CachesStream.NAME, s))
            commands: list[Command] = []
            for stream_name in streams:
                token = self._last_sent.setdefault(stream_name, self._own_position(stream_name))
                commands.append(PositionCommand(stream_name, self.instance_name, token, token))
            self._send(commands)

    def _update_commands(
        self, stream_name: str, updates: Sequence[tuple[int, Sequence[StreamRow]]]
    ) -> list[Command]:
        """One update's message: its rows token by token, then one POSITION.

        Rows whose token is not past the last one sent (a writer that published
        out of order, or re-published an event it had stored before) are still
        sent, and receivers still apply them, but the POSITION does not go back.
        """
        prev = self._last_sent.get(stream_name, 0)
        me = self.instance_name
        commands: list[Command] = []
        last = prev
        for token, rows in updates:
            for i, row in enumerate(rows):
                commands.append(
                    RdataCommand(
                        stream_name, me, token if i == len(rows) - 1 else None, row.to_json()
                    )
                )
            last = max(last, token)
        if not commands and last == prev:
            return []
        commands.append(PositionCommand(stream_name, me, prev, last))
        self._last_sent[stream_name] = last
        return commands

    async def _flush_caches(self) -> None:
        if self.caches_writer is None or not self.caches_writer.has_pending():
            return
        written = await self.caches_writer.flush()
        if written:
            self.data_handler.set_position(CachesStream.NAME, self.instance_name, written[-1][0])
        self._send(self._update_commands(CachesStream.NAME, [(t, [row]) for t, row in written]))

    def _send(self, commands: Sequence[Command]) -> None:
        if not commands:
            return
        for command in commands:
            COMMANDS_SENT.labels(command.NAME).inc()
        if self.connection is not None:
            self.connection.send(commands)

    # -- receiving --------------------------------------------------------------------
    def on_connected(self, reconnect: bool) -> None:
        if reconnect:
            logger.info("Replication link re-established; asking every writer for its position")
        self.send_command(NameCommand(self.instance_name), ReplicateCommand())

    def on_commands(self, commands: Sequence[Command]) -> None:
        for command in commands:
            COMMANDS_RECEIVED.labels(command.NAME).inc()
            if (
                isinstance(command, PositionCommand)
                and command.instance_name != self.instance_name
                and command.stream_name in self.streams
            ):
                # Noted on arrival, before the (queued) processing: the
                # difference to the applied position is this process's lag.
                self.data_handler.note_advertised(
                    command.stream_name, command.instance_name, command.new_token
                )
        self._inbound.extend(commands)
        self._schedule_inbound()

    def _schedule_inbound(self) -> None:
        # Process on a later reactor turn: the bus may call us from inside a
        # send, and handling must never re-enter the sender.
        if not self._inbound_running and not self._inbound_scheduled:
            self._inbound_scheduled = True
            self.clock.call_later(0, self._start_inbound)

    def _start_inbound(self) -> None:
        self._inbound_scheduled = False
        if not self._inbound_running:
            self._inbound_running = True
            defer.ensureDeferred(self._run_inbound())

    async def _run_inbound(self) -> None:
        try:
            while self._inbound:
                command = self._inbound.popleft()
                try:
                    await self._handle(command)
                except Exception:
                    logger.exception("Handling replication command %s failed", command.NAME)
        finally:
            self._inbound_running = False

    async def wait_until_sent(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until the outbound queue is empty."""
        deadline = self.clock.time() + timeout
        while self._outbound or self._outbound_running:
            if self.clock.time() >= deadline:
                return False
            await self.clock.sleep(0.01)
        return True

    def is_idle(self) -> bool:
        """Nothing queued to send or to handle (tests wait for this)."""
        return not (
            self._outbound
            or self._outbound_running
            or self._inbound
            or self._inbound_running
            or self._inbound_scheduled
            or (self.caches_writer is not None and self.caches_writer.has_pending())
        )

    async def _handle(self, command: Command) -> None:
        if isinstance(command, RdataCommand):
            self._on_rdata(command)
        elif isinstance(command, PositionCommand):
            await self._on_position(command)
        elif isinstance(command, ReplicateCommand):
            self._enqueue(_ANNOUNCE)
        elif isinstance(command, NameCommand):
            if command.name != self.instance_name:
                logger.info("Replication: %s is on the bus", command.name)
        elif isinstance(command, PingCommand):
            pass
        elif isinstance(command, ErrorCommand):
            logger.warning("Replication ERROR from a peer: %s", command.message)
        if isinstance(command, _OWN_IGNORED) and command.instance_name == self.instance_name:
            return
        for listener in self._listeners.get(command.NAME, ()):
            try:
                result = listener(command)
                if result is not None:
                    await result
            except Exception:
                logger.exception("Replication listener for %s failed", command.NAME)

    def _on_rdata(self, command: RdataCommand) -> None:
        if command.instance_name == self.instance_name:
            return
        stream = self.streams.get(command.stream_name)
        if stream is None:
            logger.debug("RDATA for unknown stream %r ignored", command.stream_name)
            return
        try:
            row = stream.parse_row(command.row)
        except Exception as e:
            logger.warning("Dropping bad %s row from %s: %s", stream.NAME, command.instance_name, e)
            return
        key = (command.stream_name, command.instance_name)
        self._batch.setdefault(key, []).append(row)
        if command.token is not None:
            self._held.setdefault(key, []).append((command.token, self._batch.pop(key)))

    async def _on_position(self, command: PositionCommand) -> None:
        stream_name, instance = command.stream_name, command.instance_name
        if instance == self.instance_name or stream_name not in self.streams:
            return
        key = (stream_name, instance)
        incomplete = self._batch.pop(key, None)
        if incomplete:
            logger.warning(
                "Dropping %d %s rows from %s sent without a token", len(incomplete), *key
            )
        held = self._held.pop(key, [])
        await self._advance(stream_name, instance, command.prev_token, command.new_token, held)

    async def _advance(
        self,
        stream_name: str,
        instance: str,
        prev: int,
        new: int,
        held: list[tuple[int, list[StreamRow]]],
    ) -> None:
        dh = self.data_handler
        current = dh.positions.get(stream_name, {}).get(instance)
        if current is None:
            # A database stream's positions were loaded at start-up for every
            # writer that had rows then: this writer's rows are all newer than
            # that, so start from its beginning. Otherwise (in-memory streams)
            # start where the writer is: nothing of it is cached here yet.
            current = 0 if stream_name in self._loaded_streams else prev
            dh.set_position(stream_name, instance, current)
        if current < prev:
            if not await self._catch_up(stream_name, instance, current, prev):
                # Held rows are dropped: the retry fetches them too.
                self.clock.call_later(
                    self.retry_later,
                    self._requeue,
                    PositionCommand(stream_name, instance, new, new),
                )
                return
            current = prev
        for token, rows in held:
            # A token at or below the position (the writer published out of
            # order) is applied all the same: invalidating and waking twice is
            # harmless, missing an invalidation is not. The position never goes back.
            await dh.on_rows(stream_name, instance, token, rows)
            current = max(current, token)
        if new > current:
            # A position without rows (an idle writer moving on) still goes
            # through on_rows, so in-memory indexes (the sync change caches)
            # learn that nothing up to it is missing.
            await dh.on_rows(stream_name, instance, new, [])
        self._caught_up.add((stream_name, instance))

    def _requeue(self, command: PositionCommand) -> None:
        self._inbound.append(command)
        self._schedule_inbound()

    async def _catch_up(
        self, stream_name: str, instance: str, from_token: int, to_token: int
    ) -> bool:
        """Fetch and apply ``instance``'s rows in (from_token, to_token]; False if it failed."""
        GAPS_FETCHED.labels(stream_name).inc()
        logger.info(
            "Fetching missed %s rows of %s in (%d, %d]", stream_name, instance, from_token, to_token
        )
        position = from_token
        while position < to_token:
            updates = None
            for delay in (*self.retry_delays, None):
                try:
                    updates = await self.fetcher.get_updates(
                        stream_name, instance, position, to_token, self.fetch_limit
                    )
                    break
                except Exception as e:
                    logger.warning("Fetching %s rows of %s failed: %s", stream_name, instance, e)
                    if delay is not None:
                        await self.clock.sleep(delay)
            if updates is None:
                logger.error(
                    "Giving up on %s rows of %s in (%d, %d] for now",
                    stream_name,
                    instance,
                    position,
                    to_token,
                )
                return False
            ROWS_FETCHED.labels(stream_name).inc(len(updates.rows))
            batch: list[StreamRow] = []
            for i, (token, row) in enumerate(updates.rows):
                batch.append(row)
                last_of_token = i + 1 == len(updates.rows) or updates.rows[i + 1][0] != token
                if last_of_token:
                    if token > position:
                        await self.data_handler.on_rows(stream_name, instance, token, batch)
                    batch = []
            upto = min(updates.upto_token, to_token)
            if upto <= position and updates.limited:
                logger.error("Stream %s did not advance while fetching; stopping", stream_name)
                return False
            position = max(position, upto)
            self.data_handler.set_position(stream_name, instance, position)
            if not updates.limited:
                break
        self.data_handler.set_position(stream_name, instance, to_token)
        return True

    # -- start-up -----------------------------------------------------------------------
    async def load_stored_positions(self) -> None:
        """Start every database stream at each writer's persisted position.

        Called before subscribing: rows persisted after this are then either
        heard live or found by the REPLICATE catch-up. A process starting up
        has nothing cached, so rows before these positions need no applying.
        """
        for name, stream in self.streams.items():
            positions = await stream.stored_positions()
            if positions is None:
                continue
            self._loaded_streams.add(name)
            for instance, token in positions.items():
                if instance != self.instance_name:
                    self.data_handler.set_position(name, instance, token)

    async def wait_for_writers(
        self, expected: Mapping[str, Collection[str]], timeout: float
    ) -> bool:
        """Wait until this process has caught up with a POSITION of every
        (stream, writer) in ``expected`` (the answers to its REPLICATE)."""
        deadline = self.clock.time() + timeout
        while True:
            missing = [
                (s, w)
                for s, writers in expected.items()
                for w in writers
                if (s, w) not in self._caught_up
            ]
            if not missing:
                return True
            if self.clock.time() >= deadline:
                logger.warning("No replication position yet from: %s", missing)
                return False
            await self.clock.sleep(0.05)
