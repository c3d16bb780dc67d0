"""The federation sender: turns local activity into per-destination queues.

It follows streams the way any process does: as a notifier observer it
learns that a stream advanced, then reads the new rows (from the database,
or from the writer for in-memory streams) from where it last was:
- events: each new event sent by one of our users goes to every other
  server with a user joined to the room (current state), plus the target
  server of a membership event;
- typing: changes of our users' typing in rooms with remote members (an
  ``m.typing`` EDU per user and change);
- receipts: our users' public read receipts (``m.receipt``);
- presence: our users' presence, to servers sharing a room (``m.presence``);
- to_device / device_lists: rows naming a destination wake its queue,
  which reads the outbox tables.
Remote activity is never relayed.

Only the instances in ``federation.sender_instances`` run this (the master
by default, or federation_sender workers); destinations are divided among
them by a stable hash. ``send_pdu``/``send_edu`` let other federation code
(joins, invites) queue things directly.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from twisted.internet import defer

from atrium.events.event import Event
from atrium.federation.per_destination import PerDestinationQueue
from atrium.federation.store import DevicePoke, FederationStore
from atrium.util.async_helpers import Linearizer
from atrium.util.clock import Clock

logger = logging.getLogger(__name__)

FOLLOWED_STREAMS = ("events", "typing", "receipts", "presence", "to_device", "device_lists")
FETCH_LIMIT = 500
# How often the events-stream position is stored when no event was queued.
POSITION_SAVE_INTERVAL_MS = 10_000


def sender_for_destination(destination: str, instances: Sequence[str]) -> str:
    """The sender instance responsible for ``destination``."""
    if len(instances) == 1:
        return instances[0]
    digest = hashlib.sha256(destination.encode("utf-8")).digest()
    return instances[int.from_bytes(digest[:8], "big") % len(instances)]


class FederationSender:
    def __init__(
        self,
        *,
        hs: Any,
        client: Any,
        store: FederationStore,
        clock: Clock,
        server_name: str,
        instance_name: str,
        sender_instances: Sequence[str],
        min_retry_ms: int = 10_000,
        max_retry_ms: int = 24 * 3600 * 1000,
    ) -> None:
        # hs gives the stores, streams and stream positions this follows.
        self.hs = hs
        self.client = client
        self.store = store
        self.clock = clock
        self.server_name = server_name
        self.instance_name = instance_name
        self.sender_instances = list(sender_instances)
        self.min_retry_ms = min_retry_ms
        self.max_retry_ms = max_retry_ms
        self.stopped = True
        self._queues: dict[str, PerDestinationQueue] = {}
        self._positions: dict[str, dict[str, int]] = {}
        self._stream_lock = Linearizer("federation_sender_streams")
        # room -> our users typing there, as last announced.
        self._typing: dict[str, set[str]] = {}
        self._positions_saved_ts = 0
        self._txn_prefix = str(clock.time_msec())
        self._txn_counter = 0

    # -- life cycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.stopped = False
        handler = self.hs.data_handler
        for stream in FOLLOWED_STREAMS:
            self._positions[stream] = {
                writer: handler.get_position(stream, writer)
                for writer in self.hs.config.writers_for(stream)
            }
        # Events: resume from where this sender had got to, so events persisted
        # while it was down (or not yet handled when it stopped) are queued now.
        stored = await self.store.get_sender_positions(self.instance_name)
        events = self._positions["events"]
        for writer in events:
            if writer in stored:
                events[writer] = min(stored[writer], events[writer])
        await self.store.record_queued(self.instance_name, events, {})
        self._positions_saved_ts = self.clock.time_msec()
        # Destinations that missed events (not acknowledged before a stop or a
        # crash, dropped from a full queue...) catch up from the database.
        # Before the replay below, so replayed events are not queued twice.
        for destination in await self.store.destinations_behind():
            if destination != self.server_name and self.is_responsible_for(destination):
                self._queue(destination).start_catch_up()
        self.hs.notifier.add_observer(self._on_new_data)
        # Outbox rows left from before a restart.
        for destination in await self.store.destinations_with_outbox():
            self._queue(destination).outbox_changed()
        for destination in await self.store.destinations_with_pending_pokes():
            self._queue(destination).pokes_changed()
        self._on_new_data("events", None, None, None)

    async def stop(self) -> None:
        self.stopped = True
        for queue in self._queues.values():
            queue.stop()

    # -- public ---------------------------------------------------------------------------------
    def is_responsible_for(self, destination: str) -> bool:
        return sender_for_destination(destination, self.sender_instances) == self.instance_name

    def send_pdu(self, event: Event, destinations: Iterable[str]) -> None:
        for destination in sorted(set(destinations)):
            if destination != self.server_name and self.is_responsible_for(destination):
                self._queue(destination).send_pdu(event)

    def send_edu(self, destination: str, edu_type: str, content: dict[str, Any]) -> None:
        if destination != self.server_name and self.is_responsible_for(destination):
            self._queue(destination).send_edu(edu_type, content)

    def wake_destination(self, destination: str) -> None:
        """REMOTE_SERVER_UP: the destination answered us; retry it now if backing off."""
        queue = self._queues.get(destination)
        if queue is not None and queue.backing_off:
            queue.wake()

    def next_transaction_id(self) -> str:
        self._txn_counter += 1
        return f"{self._txn_prefix}_{self._txn_counter}"

    def queue_for(self, destination: str) -> PerDestinationQueue | None:
        return self._queues.get(destination)

    def _queue(self, destination: str) -> PerDestinationQueue:
        queue = self._queues.get(destination)
        if queue is None:
            queue = self._queues[destination] = PerDestinationQueue(self, destination)
        return queue

    # -- following streams ---------------------------------------------------------------------
    def _on_new_data(self, stream: str, token: Any, users: Any, rooms: Any) -> None:
        if stream in FOLLOWED_STREAMS and not self.stopped:
            d = defer.ensureDeferred(self._catch_up(stream))
            d.addErrback(lambda f: logger.error("Federation sender on %s failed: %s", stream, f))

    async def _catch_up(self, stream: str) -> None:
        async with self._stream_lock.queue(stream):
            for writer, start in list(self._positions[stream].items()):
                target = self.hs.data_handler.get_position(stream, writer)
                position = start
                while position < target:
                    updates = await self._get_updates(stream, writer, position, target)
                    rows = [row for _, row in updates.rows]
                    position = updates.upto_token if updates.limited else target
                    try:
                        if stream == "events":
                            await self._on_event_rows(rows, writer, position)
                        else:
                            await self._handle_rows(stream, rows)
                    except Exception:
                        logger.exception("Federation sender could not handle %s rows", stream)
                self._positions[stream][writer] = position

    async def _get_updates(self, stream: str, writer: str, start: int, end: int) -> Any:
        hs = self.hs
        if writer == hs.instance_name:
            return await hs.streams[stream].get_updates(writer, start, end, FETCH_LIMIT)
        replication = getattr(hs, "replication", None)
        handler = getattr(replication, "handler", None)
        if handler is not None:
            return await handler.fetcher.get_updates(stream, writer, start, end, FETCH_LIMIT)
        return await hs.streams[stream].get_updates(writer, start, end, FETCH_LIMIT)

    async def _handle_rows(self, stream: str, rows: list[Any]) -> None:
        if stream == "typing":
            await self._on_typing_rows(rows)
        elif stream == "receipts":
            await self._on_receipt_rows(rows)
        elif stream == "presence":
            await self._on_presence_rows(rows)
        elif stream in ("to_device", "device_lists"):
            for row in rows:
                entity = row.entity
                if entity.startswith("@") or not self.is_responsible_for(entity):
                    continue
                queue = self._queue(entity)
                if stream == "to_device":
                    queue.outbox_changed()
                else:
                    queue.pokes_changed()

    async def _remote_hosts(self, room_id: str) -> set[str]:
        users = await self.hs.stores.members.get_users_in_room(room_id)
        return {u.split(":", 1)[1] for u in users} - {self.server_name}

    def should_send(self, event: Event, destination: str) -> bool:
        """Whether ``event`` is ours to send to ``destination`` (as a room's PDU)."""
        if event.internal_metadata.soft_failed or event.internal_metadata.outlier:
            return False
        if self.hs.is_mine(event.sender):
            return True
        # A join or leave handed to us by send_join/send_leave: the joining
        # server sent it to us alone, so we broadcast it (server-server API
        # "Joining Rooms"); never back to its origin.
        relayed_for = event.internal_metadata.send_on_behalf_of
        return relayed_for is not None and relayed_for != destination

    async def _on_event_rows(self, rows: Iterable[Any], writer: str, position: int) -> None:
        """Queue new events for their destinations.

        What is queued for whom is written down (``federation_destination_rooms``)
        together with how far this sender got in the writer's stream, before the
        events go into the in-memory queues: after a crash the sender resumes
        from there and every destination behind catches up (docs/federation.md).
        """
        # Our users' events, and remote membership events that may have come
        # through send_join/send_leave (only those are relayed).
        wanted = [
            r.event_id
            for r in rows
            if not r.outlier and (self.hs.is_mine(r.sender) or r.membership is not None)
        ]
        events = await self.hs.stores.events.get_events_as_list(wanted) if wanted else []
        to_send: list[tuple[Event, list[str]]] = []
        queued: dict[tuple[str, str], int] = {}
        for event in events:
            destinations = await self._remote_hosts(event.room_id)
            if event.type == "m.room.member" and event.state_key and ":" in event.state_key:
                destinations.add(event.state_key.split(":", 1)[1])
            chosen = sorted(
                d
                for d in destinations
                if d != self.server_name
                and self.is_responsible_for(d)
                and self.should_send(event, d)
            )
            if not chosen:
                continue
            to_send.append((event, chosen))
            ordering = event.internal_metadata.stream_ordering
            if ordering is not None and ordering > 0:
                for destination in chosen:
                    key = (destination, event.room_id)
                    queued[key] = max(queued.get(key, 0), ordering)
        now = self.clock.time_msec()
        # Pages with nothing for anybody only move the stored position now and
        # then: handling them again after a crash costs a read, nothing else.
        if queued or now - self._positions_saved_ts >= POSITION_SAVE_INTERVAL_MS:
            await self.store.record_queued(self.instance_name, {writer: position}, queued)
            self._positions_saved_ts = now
        for event, chosen in to_send:
            self.send_pdu(event, chosen)

    async def _on_typing_rows(self, rows: Iterable[Any]) -> None:
        for row in rows:
            now = {u for u in row.user_ids if self.hs.is_mine(u)}
            before = self._typing.get(row.room_id, set())
            if now == before:
                continue
            self._typing[row.room_id] = now
            hosts = await self._remote_hosts(row.room_id)
            for user_id in sorted(now ^ before):
                content = {"room_id": row.room_id, "user_id": user_id, "typing": user_id in now}
                for host in hosts:
                    self.send_edu(host, "m.typing", content)

    async def _on_receipt_rows(self, rows: Iterable[Any]) -> None:
        for row in rows:
            if row.receipt_type != "m.read" or not self.hs.is_mine(row.user_id):
                continue
            content = {
                row.room_id: {
                    "m.read": {row.user_id: {"event_ids": [row.event_id], "data": row.data}}
                }
            }
            for host in await self._remote_hosts(row.room_id):
                self.send_edu(host, "m.receipt", content)

    async def _on_presence_rows(self, rows: Iterable[Any]) -> None:
        now = self.clock.time_msec()
        for row in rows:
            if not self.hs.is_mine(row.user_id):
                continue
            hosts: set[str] = set()
            for room_id in await self.hs.stores.members.get_rooms_for_user(row.user_id):
                hosts |= await self._remote_hosts(room_id)
            update: dict[str, Any] = {
                "user_id": row.user_id,
                "presence": row.state,
                "last_active_ago": max(0, now - row.last_active_ts),
                "currently_active": row.state == "online",
            }
            if row.status_msg is not None:
                update["status_msg"] = row.status_msg
            for host in hosts:
                self.send_edu(host, "m.presence", {"push": [update]})

    # -- device lists ------------------------------------------------------------------------------
    async def device_list_edus(
        self, destination: str, pokes: Collection[DevicePoke]
    ) -> list[dict[str, Any]]:
        """m.device_list_update EDUs for pending pokes (spec "Device Management")."""
        if not pokes:
            return []
        hs = self.hs
        users = sorted({p.user_id for p in pokes})
        last_sent = await self.store.get_last_sent_poke_ids(destination, users)
        keys = await hs.e2e_keys_store.get_device_keys({u: [] for u in users})
        edus = []
        for poke in pokes:
            device = await hs.accounts.get_device(poke.user_id, poke.device_id)
            content: dict[str, Any] = {
                "user_id": poke.user_id,
                "device_id": poke.device_id,
                "stream_id": poke.stream_id,
                "prev_id": [last_sent[poke.user_id]] if poke.user_id in last_sent else [],
            }
            if device is None:
                content["deleted"] = True
            else:
                if device.display_name is not None:
                    content["device_display_name"] = device.display_name
                device_keys = keys.get(poke.user_id, {}).get(poke.device_id)
                if device_keys is not None:
                    device_keys = dict(device_keys)
                    device_keys.pop("unsigned", None)
                    content["keys"] = device_keys
            last_sent[poke.user_id] = poke.stream_id
            edus.append({"edu_type": "m.device_list_update", "content": content})
        return edus
