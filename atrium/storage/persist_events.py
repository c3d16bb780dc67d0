"""PersistEventStore: every write of events, in one transaction per batch.

Only a process configured to write events constructs this class; the read
stores never need it. ``EventPersister`` (persistence.py) decides WHAT to
write (forward extremities, current-state delta); this class writes it:
events + event_json, the DAG (event_edges, event_auth), state_events,
redactions, new state groups and event_to_state_groups, forward and backward
extremities, room_memberships, current_state_events + its delta stream,
local_current_membership for this server's users, client transaction IDs and
the stream position — all in ONE transaction, so a failure anywhere leaves
nothing behind. Every table is written with batched inserts; the only reads
are a handful of batched look-ups.

Caches are invalidated after the commit through the CacheInvalidator, one
call per (cache, room) naming all keys, so replication can publish each as
one caches-stream row.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import attrs

from atrium.events.event import Event
from atrium.events.room_versions import EventFormatVersion
from atrium.push.bulk import PushAction
from atrium.state.context import EventContext
from atrium.storage.database import IN_LIST_CHUNK, DatabasePool, Transaction
from atrium.storage.stores.events import (
    EVENT_CACHE_NAME,
    EventsStore,
    encode_internal_metadata,
)
from atrium.storage.stores.invalidation import CacheInvalidator, Key
from atrium.storage.stores.roommember import MEMBER
from atrium.storage.stores.rooms import store_room_txn
from atrium.storage.stores.state import StateGroupStore, StateGroupWrite, StateKey
from atrium.util.clock import Clock

# unsigned keys that only mean something to the server that added them
# (they are recomputed when serving events). prev_content/replaces_state are
# kept: they are computed once, when a local state event is created, and
# served to clients; federation never sends them (Event.get_pdu_json).
_LOCAL_UNSIGNED = ("age_ts", "transaction_id", "redacted_because")


@attrs.frozen(slots=True)
class DeltaState:
    """A change of a room's current state: keys removed and keys (re)set."""

    to_delete: Collection[StateKey] = ()
    to_insert: Mapping[StateKey, str] = attrs.field(factory=dict)

    def is_empty(self) -> bool:
        return not self.to_delete and not self.to_insert


def event_json_text(event: Event) -> str:
    """The stored JSON: the PDU without server-local unsigned data (no deep copy)."""
    d = dict(event.as_dict_ref())
    if event.format_version != EventFormatVersion.V1:
        d.pop("event_id", None)
    unsigned = d.get("unsigned")
    if isinstance(unsigned, dict) and any(k in unsigned for k in _LOCAL_UNSIGNED):
        kept = {k: v for k, v in unsigned.items() if k not in _LOCAL_UNSIGNED}
        if kept:
            d["unsigned"] = kept
        else:
            del d["unsigned"]
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)


def execute_in(
    txn: Transaction,
    sql_template: str,
    column: str,
    values: Collection[Any],
    args: Sequence[Any] = (),
) -> None:
    """Run a statement with ``{in}`` (like ``select_many``) that returns no rows."""
    values = list(values)
    for start in range(0, len(values), IN_LIST_CHUNK):
        clause, in_args = txn.engine.in_clause(column, values[start : start + IN_LIST_CHUNK])
        txn.execute(sql_template.format(**{"in": clause}), [*in_args, *args])


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@attrs.frozen(slots=True)
class _Batch:
    """Everything the transaction needs, prepared on the reactor thread."""

    events_and_contexts: Sequence[tuple[Event, EventContext]]
    orderings: Mapping[str, int]
    new_forward_extremities: Mapping[str, Collection[str]]
    state_deltas: Mapping[str, DeltaState]
    backfilled: bool
    group_writes: Sequence[StateGroupWrite]
    known_chain_lengths: Mapping[int, int]
    received_ts: int
    filled_backward_extremities: Collection[str] | None
    known_stored: Collection[str]
    # event ID -> push actions of local users (atrium/push/bulk.py).
    push_actions: Mapping[str, Sequence[PushAction]]


class PersistEventStore:
    """Writes batches of events (possibly of several rooms) atomically."""

    def __init__(
        self,
        db: DatabasePool,
        *,
        events: EventsStore,
        state: StateGroupStore,
        invalidator: CacheInvalidator,
        clock: Clock,
        instance_name: str,
        is_mine: Callable[[str], bool],
    ) -> None:
        self.db = db
        self.events = events
        self.state = state
        self.invalidator = invalidator
        self.clock = clock
        self.instance_name = instance_name
        self.is_mine = is_mine

    async def persist_events_and_state_updates(
        self,
        events_and_contexts: Sequence[tuple[Event, EventContext]],
        *,
        new_forward_extremities: Mapping[str, Collection[str]],
        state_deltas: Mapping[str, DeltaState],
        backfilled: bool = False,
        filled_backward_extremities: Collection[str] | None = None,
        known_stored: Collection[str] = (),
        push_actions: Mapping[str, Sequence[PushAction]] | None = None,
    ) -> int:
        """Write the batch; returns the stream ordering of its last event.

        Backfilled events get negative (decreasing) stream orderings and
        never touch forward extremities or current state. On success each
        event's internal metadata carries its stream_ordering and
        instance_name.

        Two optional hints save statements when the caller already knows:
        ``filled_backward_extremities``, which of the batch's events are
        backward extremities now (None: look for all of them), and
        ``known_stored``, events known to be stored non-outliers (e.g. the old
        forward extremities), which need no look-up as prev_events.
        """
        gen = self.events.backfill_id_gen if backfilled else self.events.stream_id_gen
        group_writes = _ordered_group_writes(events_and_contexts)
        known_lengths = self.state.known_chain_lengths(group_writes)
        async with gen.allocate(len(events_and_contexts)) as ids:
            orderings = {
                ev.event_id: so for (ev, _), so in zip(events_and_contexts, ids, strict=True)
            }
            batch = _Batch(
                events_and_contexts,
                orderings,
                {} if backfilled else new_forward_extremities,
                {} if backfilled else state_deltas,
                backfilled,
                group_writes,
                known_lengths,
                self.clock.time_msec(),
                filled_backward_extremities,
                known_stored,
                {} if backfilled else (push_actions or {}),
            )
            await self.db.run_interaction("persist_events", self._persist_txn, batch)
            for event, _ in events_and_contexts:
                meta = event.internal_metadata
                meta.stream_ordering = orderings[event.event_id]
                meta.instance_name = self.instance_name
        # Warm this process's caches with what it has just written (other
        # processes learn of it by replication).
        self.events.cache_events(e for e, c in events_and_contexts if c.rejected is None)
        self.state.note_event_groups(
            {
                e.event_id: c.state_group_after
                for e, c in events_and_contexts
                if c.state_group_after is not None
            }
        )
        for room_id, extremities in batch.new_forward_extremities.items():
            self.events.get_latest_event_ids_in_room.prefill((room_id,), frozenset(extremities))
        return ids[-1] if ids else gen.get_current_token()

    # -- the transaction --------------------------------------------------------------
    def _persist_txn(self, txn: Transaction, batch: _Batch) -> None:
        self._store_events_txn(txn, batch)
        self._store_dag_txn(txn, batch)
        self.state.store_state_groups_txn(txn, batch.group_writes, batch.known_chain_lengths)
        txn.insert_many(
            "event_to_state_groups",
            ("event_id", "state_group"),
            [
                (e.event_id, c.state_group_after)
                for e, c in batch.events_and_contexts
                if c.state_group_after is not None
            ],
        )
        member_info = self._store_metadata_txn(txn, batch)
        self._update_forward_extremities_txn(txn, batch)
        self._update_backward_extremities_txn(txn, batch)
        self._update_current_state_txn(txn, batch, member_info)
        self._store_txn_ids_txn(txn, batch)
        self._store_push_actions_txn(txn, batch)
        if batch.orderings:
            if batch.backfilled:
                stream, position = "backfill", min(batch.orderings.values())
            else:
                stream, position = "events", max(batch.orderings.values())
            txn.upsert(
                "stream_positions",
                {"stream_name": stream, "instance_name": self.instance_name},
                {"stream_id": position},
            )

    def _store_events_txn(self, txn: Transaction, batch: _Batch) -> None:
        event_rows: list[tuple[Any, ...]] = []
        json_rows: list[tuple[Any, ...]] = []
        for event, context in batch.events_and_contexts:
            meta = event.internal_metadata
            rejected = context.rejected or event.rejected_reason
            event_rows.append(
                (
                    batch.orderings[event.event_id],
                    event.event_id,
                    event.room_id,
                    event.type,
                    event.state_key,
                    event.sender,
                    event.depth,
                    event.origin_server_ts,
                    batch.received_ts,
                    int(event.format_version),
                    meta.outlier,
                    meta.soft_failed,
                    rejected,
                    # Only redactions redact: from v11 `redacts` is a content
                    # key, which any other event may carry with any value.
                    event.redacts if event.type == "m.room.redaction" else None,
                    self.instance_name,
                )
            )
            json_rows.append(
                (
                    event.event_id,
                    event.room_id,
                    encode_internal_metadata(meta),
                    event_json_text(event),
                )
            )
        txn.insert_many(
            "events",
            (
                "stream_ordering",
                "event_id",
                "room_id",
                "type",
                "state_key",
                "sender",
                "topological_ordering",
                "origin_server_ts",
                "received_ts",
                "format_version",
                "outlier",
                "soft_failed",
                "rejection_reason",
                "redacts",
                "instance_name",
            ),
            event_rows,
        )
        txn.insert_many(
            "event_json", ("event_id", "room_id", "internal_metadata", "json"), json_rows
        )

    def _store_dag_txn(self, txn: Transaction, batch: _Batch) -> None:
        edge_rows: list[tuple[str, str, str]] = []
        auth_rows: list[tuple[str, str, str]] = []
        for event, _ in batch.events_and_contexts:
            # dict.fromkeys: a malformed event listing an ID twice must not
            # break the primary key.
            edge_rows.extend(
                (event.event_id, p, event.room_id) for p in dict.fromkeys(event.prev_event_ids())
            )
            auth_rows.extend(
                (event.event_id, a, event.room_id) for a in dict.fromkeys(event.auth_event_ids())
            )
        txn.insert_many("event_edges", ("event_id", "prev_event_id", "room_id"), edge_rows)
        txn.insert_many("event_auth", ("event_id", "auth_id", "room_id"), auth_rows)

    def _store_metadata_txn(self, txn: Transaction, batch: _Batch) -> dict[str, tuple[str, int]]:
        """state_events, redactions, room_memberships, rooms (for create events).

        Returns event_id -> (membership, stream_ordering) of the member events
        written, for the current-state update. Rejected events get none of
        these rows: they never take effect.
        """
        state_rows: list[tuple[str, str, str, str]] = []
        redaction_rows: list[tuple[str, str, int]] = []
        member_rows: list[tuple[Any, ...]] = []
        member_info: dict[str, tuple[str, int]] = {}
        local_oob: list[tuple[str, str, str, str, int]] = []
        redacted: list[Key] = []
        for event, context in batch.events_and_contexts:
            if context.rejected or event.rejected_reason:
                continue
            state_key = event.state_key
            if state_key is not None:
                state_rows.append((event.event_id, event.room_id, event.type, state_key))
            if event.type == "m.room.redaction" and event.redacts is not None:
                redaction_rows.append((event.event_id, event.redacts, batch.received_ts))
                redacted.append((event.redacts,))
            elif event.type == "m.room.create" and state_key == "":
                content = event.content
                version = content.get("room_version", "1")
                creator = _str_or_none(content.get("creator")) or event.sender
                store_room_txn(txn, self.invalidator, event.room_id, str(version), creator, False)
            elif event.type == MEMBER and state_key is not None:
                membership = event.membership or ""
                ordering = batch.orderings[event.event_id]
                content = event.content
                member_rows.append(
                    (
                        event.event_id,
                        state_key,
                        event.sender,
                        event.room_id,
                        membership,
                        _str_or_none(content.get("displayname")),
                        _str_or_none(content.get("avatar_url")),
                        ordering,
                    )
                )
                member_info[event.event_id] = (membership, ordering)
                meta = event.internal_metadata
                if meta.outlier and meta.out_of_band_membership and self.is_mine(state_key):
                    local_oob.append(
                        (state_key, event.room_id, event.event_id, membership, ordering)
                    )
        txn.insert_many("state_events", ("event_id", "room_id", "type", "state_key"), state_rows)
        txn.insert_many("redactions", ("event_id", "redacts", "received_ts"), redaction_rows)
        txn.insert_many(
            "room_memberships",
            (
                "event_id",
                "user_id",
                "sender",
                "room_id",
                "membership",
                "display_name",
                "avatar_url",
                "event_stream_ordering",
            ),
            member_rows,
        )
        if local_oob:
            self._set_local_memberships_txn(txn, local_oob)
        if redacted:
            txn.call_after(self.invalidator.invalidate, EVENT_CACHE_NAME, redacted)
        return member_info

    def _update_forward_extremities_txn(self, txn: Transaction, batch: _Batch) -> None:
        if not batch.new_forward_extremities:
            return
        rooms = list(batch.new_forward_extremities)
        execute_in(txn, "DELETE FROM event_forward_extremities WHERE {in}", "room_id", rooms)
        txn.insert_many(
            "event_forward_extremities",
            ("room_id", "event_id"),
            [(r, e) for r, extrems in batch.new_forward_extremities.items() for e in extrems],
        )
        # Every room whose extremities changed has a timeline event in this
        # batch, whose events-stream row drops this cache on every process:
        # a caches-stream row (one more write and message before the events
        # rows can go out) would only repeat it.
        txn.call_after(
            self.invalidator.invalidate_local,
            "get_latest_event_ids_in_room",
            [(r,) for r in rooms],
        )

    def _update_backward_extremities_txn(self, txn: Transaction, batch: _Batch) -> None:
        """prev_events we do not hold become backward extremities; filled ones stop being."""
        in_dag = {
            e.event_id for e, _ in batch.events_and_contexts if not e.internal_metadata.outlier
        }
        if not in_dag:
            return
        wanted: dict[str, str] = {}
        for event, _ in batch.events_and_contexts:
            if not event.internal_metadata.outlier:
                for prev_id in event.prev_event_ids():
                    if prev_id not in in_dag and prev_id not in batch.known_stored:
                        wanted[prev_id] = event.room_id
        if wanted:
            held = txn.select_many(
                "SELECT event_id FROM events WHERE {in} AND outlier = FALSE", "event_id", wanted
            )
            for (event_id,) in held:
                wanted.pop(event_id, None)
        if wanted:
            already = txn.select_many(
                "SELECT room_id, event_id FROM event_backward_extremities WHERE {in}",
                "event_id",
                wanted,
            )
            for room_id, event_id in already:
                if wanted.get(event_id) == room_id:
                    del wanted[event_id]
            txn.insert_many(
                "event_backward_extremities",
                ("room_id", "event_id"),
                [(room_id, event_id) for event_id, room_id in wanted.items()],
            )
        filled = in_dag
        if batch.filled_backward_extremities is not None:
            filled = in_dag & set(batch.filled_backward_extremities)
        if filled:
            execute_in(txn, "DELETE FROM event_backward_extremities WHERE {in}", "event_id", filled)

    def _update_current_state_txn(
        self, txn: Transaction, batch: _Batch, member_info: Mapping[str, tuple[str, int]]
    ) -> None:
        deltas = {r: d for r, d in batch.state_deltas.items() if not d.is_empty()}
        if not deltas:
            return
        stream_id = max(batch.orderings.values()) if batch.orderings else 0
        batch_events = {e.event_id: e for e, _ in batch.events_and_contexts}
        # Membership of member events entering current state that were not
        # in this batch (state resolution can pick older ones): one query.
        outside = [
            event_id
            for delta in deltas.values()
            for key, event_id in delta.to_insert.items()
            if key[0] == MEMBER and event_id not in member_info
        ]
        info = dict(member_info)
        if outside:
            for event_id, membership, ordering in txn.select_many(
                "SELECT event_id, membership, event_stream_ordering FROM room_memberships"
                " WHERE {in}",
                "event_id",
                outside,
            ):
                info[event_id] = (membership, ordering)

        delete_ids: list[str] = []
        insert_rows: list[tuple[Any, ...]] = []
        stream_rows: list[tuple[Any, ...]] = []
        local_rows: list[tuple[str, str, str, str, int]] = []
        changed_members: dict[str, list[str]] = {}
        # (room, user) whose new member event is in this batch (not an outlier):
        # that event's events-stream row drops the user's room list everywhere.
        carried: set[tuple[str, str]] = set()
        for room_id, delta in deltas.items():
            keys = set(delta.to_delete) | set(delta.to_insert)
            old: dict[StateKey, str] = {}
            for event_type, state_key, event_id in txn.select_many(
                "SELECT type, state_key, event_id FROM current_state_events"
                " WHERE {in} AND room_id = ?",
                "state_key",
                {k for _, k in keys},
                (room_id,),
            ):
                if (event_type, state_key) in keys:
                    old[(event_type, state_key)] = event_id
            members: list[str] = []
            for key in delta.to_delete:
                if key in old:
                    delete_ids.append(old[key])
                    stream_rows.append(
                        (stream_id, self.instance_name, room_id, key[0], key[1], None, old[key])
                    )
                    if key[0] == MEMBER:
                        members.append(key[1])
            for key, event_id in delta.to_insert.items():
                prev_id = old.get(key)
                if prev_id == event_id:
                    continue
                if prev_id is not None:
                    delete_ids.append(prev_id)
                membership = None
                if key[0] == MEMBER:
                    membership, ordering = info.get(event_id, (None, stream_id))
                    if membership is None:
                        event = batch_events.get(event_id)
                        membership = event.membership if event is not None else None
                    members.append(key[1])
                    in_batch = batch_events.get(event_id)
                    if in_batch is not None and not in_batch.internal_metadata.outlier:
                        carried.add((room_id, key[1]))
                    if membership is not None and self.is_mine(key[1]):
                        local_rows.append((key[1], room_id, event_id, membership, ordering))
                insert_rows.append((room_id, key[0], key[1], event_id, membership))
                stream_rows.append(
                    (stream_id, self.instance_name, room_id, key[0], key[1], event_id, prev_id)
                )
            changed_members[room_id] = members
        if delete_ids:
            execute_in(txn, "DELETE FROM current_state_events WHERE {in}", "event_id", delete_ids)
        txn.insert_many(
            "current_state_events",
            ("room_id", "type", "state_key", "event_id", "membership"),
            insert_rows,
        )
        txn.insert_many(
            "current_state_delta_stream",
            (
                "stream_id",
                "instance_name",
                "room_id",
                "type",
                "state_key",
                "event_id",
                "prev_event_id",
            ),
            stream_rows,
        )
        if local_rows:
            self._set_local_memberships_txn(txn, local_rows)
        txn.call_after(self._invalidate_current_state, changed_members, carried)

    def _set_local_memberships_txn(
        self, txn: Transaction, rows: Sequence[tuple[str, str, str, str, int]]
    ) -> None:
        """Upsert local_current_membership rows (user, room, event, membership, ordering)."""
        latest: dict[tuple[str, str], tuple[str, str, str, str, int]] = {}
        for row in rows:
            latest[(row[0], row[1])] = row
        by_room: dict[str, list[str]] = {}
        for user_id, room_id in latest:
            by_room.setdefault(room_id, []).append(user_id)
        for room_id, users in by_room.items():
            execute_in(
                txn,
                "DELETE FROM local_current_membership WHERE {in} AND room_id = ?",
                "user_id",
                users,
                (room_id,),
            )
        txn.insert_many(
            "local_current_membership",
            ("user_id", "room_id", "event_id", "membership", "event_stream_ordering"),
            list(latest.values()),
        )
        for room_id, users in by_room.items():
            txn.call_after(
                self.invalidator.invalidate,
                "get_local_current_membership_for_user_in_room",
                [(u, room_id) for u in users],
            )

    def _invalidate_current_state(
        self,
        changed_members: Mapping[str, Sequence[str]],
        carried: Collection[tuple[str, str]] = (),
    ) -> None:
        invalidate = self.invalidator.invalidate
        for room_id, members in changed_members.items():
            invalidate("get_current_state_ids", [(room_id,)])
            if members:
                invalidate("get_users_in_room", [(room_id,)])
                invalidate("get_membership_counts", [(room_id,)])
                users = list(dict.fromkeys(members))
                # A user whose member event is in the batch: every process drops
                # their room list when it applies that event's events-stream row,
                # just before waking their /sync (so here, locally, only). The
                # others (state resolution picked an older member event) have no
                # row of their own: they go in a caches-stream row.
                own = [(u,) for u in users if (room_id, u) in carried]
                others = [(u,) for u in users if (room_id, u) not in carried]
                if own:
                    self.invalidator.invalidate_local(
                        "get_rooms_for_user_with_stream_ordering", own
                    )
                if others:
                    invalidate("get_rooms_for_user_with_stream_ordering", others)

    def _store_push_actions_txn(self, txn: Transaction, batch: _Batch) -> None:
        if not batch.push_actions:
            return
        rooms = {e.event_id: e.room_id for e, _ in batch.events_and_contexts}
        txn.insert_many(
            "event_push_actions",
            (
                "user_id",
                "room_id",
                "event_id",
                "stream_ordering",
                "actions",
                "notif",
                "highlight",
            ),
            [
                (
                    a.user_id,
                    rooms[event_id],
                    event_id,
                    batch.orderings[event_id],
                    a.actions_json,
                    a.notify,
                    a.highlight,
                )
                for event_id, actions in batch.push_actions.items()
                if event_id in batch.orderings
                for a in actions
            ],
        )

    def _store_txn_ids_txn(self, txn: Transaction, batch: _Batch) -> None:
        rows = []
        for event, _ in batch.events_and_contexts:
            meta = event.internal_metadata
            if (
                meta.txn_id is not None
                and meta.device_id is not None
                and self.is_mine(event.sender)
            ):
                rows.append(
                    (
                        event.event_id,
                        event.room_id,
                        event.sender,
                        meta.device_id,
                        meta.txn_id,
                        batch.received_ts,
                    )
                )
        txn.insert_many(
            "event_txn_id",
            ("event_id", "room_id", "user_id", "device_id", "txn_id", "inserted_ts"),
            rows,
        )


def _ordered_group_writes(
    events_and_contexts: Sequence[tuple[Event, EventContext]],
) -> list[StateGroupWrite]:
    """The batch's new state groups, each once, parents before children."""
    writes: dict[int, StateGroupWrite] = {}
    for _, context in events_and_contexts:
        for write in context.state_group_writes:
            writes.setdefault(write.group, write)
    ordered: list[StateGroupWrite] = []
    done: set[int] = set()

    def visit(write: StateGroupWrite) -> None:
        if write.group in done:
            return
        done.add(write.group)
        parent = writes.get(write.prev_group) if write.prev_group is not None else None
        if parent is not None:
            visit(parent)
        ordered.append(write)

    for write in writes.values():
        visit(write)
    return ordered
