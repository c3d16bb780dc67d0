"""EventsStore: the read side of events — loading PDUs, the DAG and auth chains.

Writes live in ``atrium/storage/persist_events.py`` (PersistEventStore), which
only processes configured to write events construct; this store works on
every process.

Loading rules:
- One query joins ``events`` and ``event_json`` (and ``rooms`` for the room
  version, ``redactions`` for redactions of the event) for a whole batch.
- An event is built with the format version it was STORED with (a v2-format
  event in a room later thought to be v10 keeps its ID), and the RoomVersion
  of its room (which decides redaction and auth).
- Redactions (spec rooms/v3+ "Handling redactions"): a persisted, accepted
  redaction prunes the event it targets when the redaction's sender has the
  same server name as the original sender. Room versions 1 and 2 authorised
  redactions in the auth rules already (rooms/v1 auth rule 11), so there any
  accepted redaction applies. Limitation: in v3+ rooms a redaction by a
  moderator of ANOTHER server is not applied at load time (that needs the
  redaction's power level at its state; see the report/docs).
- Loaded events are kept in an LRU keyed by event ID ("_get_event_cache").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from atrium.events.event import Event, EventInternalMetadata
from atrium.events.room_versions import EventFormatVersion, get_room_version
from atrium.state.auth_chain import auth_chain_difference
from atrium.storage.database import DatabasePool, Transaction
from atrium.storage.id_generators import MultiWriterIdGenerator, StreamIdGenerator
from atrium.storage.stores.errors import NotFoundError
from atrium.storage.stores.rooms import RoomStore
from atrium.util.caches import LruCache, cached

logger = logging.getLogger(__name__)

EVENT_CACHE_NAME = "_get_event_cache"

StateMap = Mapping[tuple[str, str], str]

# Internal-metadata fields kept in event_json.internal_metadata; outlier,
# soft_failed, stream_ordering and instance_name have their own columns.
_JSON_METADATA_FIELDS = (
    "txn_id",
    "device_id",
    "token_id",
    "out_of_band_membership",
    "send_on_behalf_of",
)

_FETCH_EVENTS_SQL = """
SELECT e.event_id, e.stream_ordering, e.format_version, e.outlier, e.soft_failed,
       e.rejection_reason, e.instance_name, j.internal_metadata, j.json, r.room_version,
       e.sender, re.sender, re.event_id
FROM events AS e
JOIN event_json AS j ON j.event_id = e.event_id
LEFT JOIN rooms AS r ON r.room_id = e.room_id
LEFT JOIN redactions AS rd ON rd.redacts = e.event_id
LEFT JOIN events AS re ON re.event_id = rd.event_id AND re.room_id = e.room_id
    AND re.rejection_reason IS NULL AND re.soft_failed = FALSE
WHERE {in}
"""


def server_name_of(user_id: str) -> str:
    """The server part of a user ID (everything after the first colon)."""
    _, _, server = user_id.partition(":")
    return server


def encode_internal_metadata(meta: EventInternalMetadata) -> str:
    """The JSON kept in event_json.internal_metadata (only the fields that are set)."""
    fields: dict[str, Any] = {}
    for name in _JSON_METADATA_FIELDS:
        value = getattr(meta, name)
        if value not in (None, False):
            fields[name] = value
    return json.dumps(fields, separators=(",", ":"))


def _build_event(
    row: Sequence[Any], redactions: Iterable[tuple[str | None, str | None]]
) -> tuple[Event | None, str | None]:
    """The event of ``row``, pruned when one of its ``redactions`` (sender,
    event ID) applies, and the ID of that redaction."""
    (
        event_id,
        stream_ordering,
        format_version,
        outlier,
        soft_failed,
        rejection_reason,
        instance_name,
        metadata_json,
        event_json,
        room_version_id,
        sender,
        _,
        _,
    ) = row
    room_version = get_room_version(room_version_id) if room_version_id else None
    if room_version is None:
        logger.warning("Not loading %s: room version %r unknown", event_id, room_version_id)
        return None, None
    stored_meta = json.loads(metadata_json)
    meta = EventInternalMetadata(
        outlier=bool(outlier),
        soft_failed=bool(soft_failed),
        stream_ordering=stream_ordering,
        instance_name=instance_name,
        # Only fields this version knows: a newer writer may have added some.
        **{k: stored_meta[k] for k in _JSON_METADATA_FIELDS if k in stored_meta},
    )
    event = Event(
        json.loads(event_json),
        room_version,
        EventFormatVersion(format_version),
        meta,
        rejection_reason,
    )
    # The row's event_id is authoritative; seeding it saves recomputing the
    # reference hash of every v2/v3-format event we load.
    event._event_id = event_id
    redaction_id = None
    if rejection_reason is None:
        redaction_id = _applying_redaction(room_version, sender, redactions)
        if redaction_id is not None:
            event = event.pruned()
    return event, redaction_id


def _applying_redaction(
    room_version: Any, sender: str, redactions: Iterable[tuple[str | None, str | None]]
) -> str | None:
    """The first redaction (sender, event ID) that applies to an event of ``sender``."""
    # Rooms 1 and 2 (v1 event format) checked redactions in the auth rules.
    pre_v3 = room_version.event_format == EventFormatVersion.V1
    domain = server_name_of(sender)
    for redaction_sender, redaction_id in redactions:
        if redaction_sender is None:
            continue
        if pre_v3 or server_name_of(redaction_sender) == domain:
            return redaction_id
    return None


def fetch_events_txn(
    txn: Transaction, event_ids: Collection[str], with_redactions: bool = True
) -> dict[str, Event]:
    """Load events (including rejected ones) in one statement per 500 IDs.

    A redacted event comes pruned, with the redaction that pruned it as
    ``redacted_because`` (loaded in one more statement, ``with_redactions``).
    """
    rows = txn.select_many(_FETCH_EVENTS_SQL, "e.event_id", event_ids)
    by_id: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_id.setdefault(row[0], []).append(row)
    events: dict[str, Event] = {}
    redacted_by: dict[str, str] = {}
    for event_id, event_rows in by_id.items():
        event, redaction_id = _build_event(event_rows[0], ((r[11], r[12]) for r in event_rows))
        if event is not None:
            events[event_id] = event
            if redaction_id is not None:
                redacted_by[event_id] = redaction_id
    if with_redactions and redacted_by:
        missing = set(redacted_by.values()) - events.keys()
        # One level only: the redactions' own redactions are not followed.
        redactions = {**fetch_events_txn(txn, missing, with_redactions=False), **events}
        for event_id, redaction_id in redacted_by.items():
            events[event_id].redacted_because = redactions.get(redaction_id)
    return events


class EventsStore:
    """Reading events, forward extremities, depths, auth chains and txn IDs."""

    def __init__(
        self,
        db: DatabasePool,
        rooms: RoomStore,
        stream_id_gen: StreamIdGenerator | MultiWriterIdGenerator,
        backfill_id_gen: StreamIdGenerator,
        event_cache_size: int = 50_000,
    ) -> None:
        self.db = db
        self.rooms = rooms
        # Positive stream orderings for new events, negative ones for
        # backfilled history; the writer allocates from these, readers ask
        # them for the current token.
        self.stream_id_gen = stream_id_gen
        self.backfill_id_gen = backfill_id_gen
        self.event_cache: LruCache[str, Event] = LruCache(event_cache_size, EVENT_CACHE_NAME)

    @classmethod
    async def create(
        cls,
        db: DatabasePool,
        rooms: RoomStore,
        event_cache_size: int = 50_000,
        multi_writer_instance: str | None = None,
    ) -> EventsStore:
        """An EventsStore whose stream id generators start after what is stored.

        ``multi_writer_instance`` names this process when it is one of several
        events writers: stream orderings then come from a shared PostgreSQL
        sequence (MultiWriterIdGenerator) instead of an in-memory counter.
        """
        stream: Any
        if multi_writer_instance is not None:
            stream = await MultiWriterIdGenerator.create(
                db,
                "events_stream_seq",
                "events",
                multi_writer_instance,
                "events",
                "stream_ordering",
            )
        else:
            stream = await StreamIdGenerator.from_tables(db, [("events", "stream_ordering")])
        backfill = await StreamIdGenerator.from_tables(db, [("events", "stream_ordering")], step=-1)
        return cls(db, rooms, stream, backfill, event_cache_size)

    # -- loading events ------------------------------------------------------
    async def get_event(
        self, event_id: str, allow_none: bool = False, allow_rejected: bool = False
    ) -> Event | None:
        """One event; NotFoundError (or None with allow_none) if we do not have it."""
        events = await self.get_events([event_id], allow_rejected=allow_rejected)
        event = events.get(event_id)
        if event is None and not allow_none:
            raise NotFoundError(f"event {event_id} not found")
        return event

    async def get_events(
        self, event_ids: Iterable[str], allow_rejected: bool = False
    ) -> dict[str, Event]:
        """The events we have among ``event_ids`` (rejected ones only if asked)."""
        found: dict[str, Event] = {}
        missing: list[str] = []
        cache_get = self.event_cache.get
        for event_id in event_ids:
            event = cache_get(event_id)
            if event is None:
                missing.append(event_id)
            else:
                found[event_id] = event
        if missing:
            fetched = await self.db.run_interaction("get_events", fetch_events_txn, set(missing))
            for event_id, event in fetched.items():
                self.event_cache.set(event_id, event)
            found.update(fetched)
        if not allow_rejected:
            found = {k: e for k, e in found.items() if e.rejected_reason is None}
        return found

    async def get_events_as_list(
        self, event_ids: Sequence[str], allow_rejected: bool = False
    ) -> list[Event]:
        """The events we have, in the order asked."""
        events = await self.get_events(event_ids, allow_rejected)
        return [events[e] for e in event_ids if e in events]

    def cache_events(self, events: Iterable[Event]) -> None:
        """Put freshly persisted events in the event cache (writer only)."""
        for event in events:
            self.event_cache.set(event.event_id, event)

    def invalidate_event_cache(self, key: tuple[Any, ...]) -> None:
        self.event_cache.pop(key[0])

    async def have_seen_events(self, event_ids: Iterable[str]) -> set[str]:
        """The subset of ``event_ids`` we have stored (rejected and outliers included)."""
        seen: set[str] = set()
        missing: list[str] = []
        for event_id in event_ids:
            if event_id in self.event_cache:
                seen.add(event_id)
            else:
                missing.append(event_id)
        if missing:
            rows = await self.db.run_interaction(
                "have_seen_events",
                lambda txn: txn.select_many(
                    "SELECT event_id FROM events WHERE {in}", "event_id", set(missing)
                ),
            )
            seen.update(r[0] for r in rows)
        return seen

    # -- the DAG ---------------------------------------------------------------
    @cached(max_entries=10_000)
    async def get_latest_event_ids_in_room(self, room_id: str) -> frozenset[str]:
        """The room's forward extremities: the prev_events of the next event we send."""
        rows = await self.db.execute(
            "get_latest_event_ids_in_room",
            "SELECT event_id FROM event_forward_extremities WHERE room_id = ?",
            room_id,
        )
        return frozenset(r[0] for r in rows)

    async def get_max_depth_of(self, event_ids: Collection[str]) -> int:
        """The greatest depth among the given events we have (0 if none)."""
        if not event_ids:
            return 0
        rows = await self.db.run_interaction(
            "get_max_depth_of",
            lambda txn: txn.select_many(
                "SELECT MAX(topological_ordering) FROM events WHERE {in}", "event_id", event_ids
            ),
        )
        depths = [r[0] for r in rows if r[0] is not None]
        return max(depths) if depths else 0

    async def get_backward_extremities(self, room_id: str) -> set[str]:
        """prev_events of the room we reference but do not hold (backfill starts there)."""
        rows = await self.db.execute(
            "get_backward_extremities",
            "SELECT event_id FROM event_backward_extremities WHERE room_id = ?",
            room_id,
        )
        return {r[0] for r in rows}

    # -- auth chains --------------------------------------------------------------
    async def get_auth_chain_ids(
        self, event_ids: Collection[str], include_given: bool = False
    ) -> set[str]:
        """Every event reachable from ``event_ids`` through auth_events.

        One recursive statement (per 500 starting IDs); UNION makes the walk
        stop at events already reached.
        """
        if not event_ids:
            return set()
        rows = await self.db.run_interaction(
            "get_auth_chain_ids",
            lambda txn: txn.select_many(
                """
                WITH RECURSIVE chain(event_id) AS (
                    SELECT auth_id FROM event_auth WHERE {in}
                    UNION
                    SELECT a.auth_id FROM event_auth AS a JOIN chain AS c ON a.event_id = c.event_id
                )
                SELECT event_id FROM chain
                """,
                "event_id",
                event_ids,
            ),
        )
        chain = {r[0] for r in rows}
        if include_given:
            chain.update(event_ids)
        return chain

    async def get_auth_events_and_depths(
        self, event_ids: Collection[str]
    ) -> dict[str, tuple[int, list[str]]]:
        """event_id -> (depth, auth_event_ids) for the given events we have.

        One query per batch: the fetcher the converging auth-chain walk of
        state resolution calls once per step.
        """
        if not event_ids:
            return {}
        rows = await self.db.run_interaction(
            "get_auth_events_and_depths",
            lambda txn: txn.select_many(
                "SELECT e.event_id, e.topological_ordering, a.auth_id FROM events AS e"
                " LEFT JOIN event_auth AS a ON a.event_id = e.event_id WHERE {in}",
                "e.event_id",
                event_ids,
            ),
        )
        result: dict[str, tuple[int, list[str]]] = {}
        for event_id, depth, auth_id in rows:
            entry = result.get(event_id)
            if entry is None:
                entry = result[event_id] = (depth, [])
            if auth_id is not None:
                entry[1].append(auth_id)
        return result

    async def get_auth_chain_difference(
        self,
        room_id: str,
        state_sets: Sequence[Collection[str]],
        extra_events: Mapping[str, Event] | None = None,
    ) -> set[str]:
        """The auth difference of state sets (spec rooms/v2 "Auth difference").

        Feeds the converging walk of ``atrium.state.auth_chain`` from the
        database, one query per step; ``extra_events`` are events not yet
        persisted (a batch being stored) that the walk may meet.
        """
        extra = extra_events or {}

        async def fetch(event_ids: Collection[str]) -> dict[str, tuple[int, list[str]]]:
            found: dict[str, tuple[int, list[str]]] = {}
            rest: list[str] = []
            for event_id in event_ids:
                event = extra.get(event_id)
                if event is None:
                    rest.append(event_id)
                else:
                    found[event_id] = (event.depth, event.auth_event_ids())
            if rest:
                found.update(await self.get_auth_events_and_depths(rest))
            return found

        return await auth_chain_difference(state_sets, fetch)

    # -- client transaction IDs ----------------------------------------------------
    async def get_event_id_for_txn(
        self, room_id: str, user_id: str, device_id: str, txn_id: str
    ) -> str | None:
        """The event a client already sent with this transaction ID, if any."""
        rows = await self.db.execute(
            "get_event_id_for_txn",
            "SELECT event_id FROM event_txn_id"
            " WHERE room_id = ? AND user_id = ? AND device_id = ? AND txn_id = ?",
            room_id,
            user_id,
            device_id,
            txn_id,
        )
        return rows[0][0] if rows else None

    # -- stream position ---------------------------------------------------------
    def get_current_events_token(self) -> int:
        """The events stream position: every event at or below it is persisted."""
        return self.stream_id_gen.get_current_token()
