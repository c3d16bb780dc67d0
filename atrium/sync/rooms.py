"""The rooms part of a /sync response: join, invite, knock and leave entries.

Spec: client-server API "Syncing" and GET /sync. One ``RoomsBuilder.build``
call computes every room entry of one response in a fixed number of batched
store calls, whatever the number of rooms:

1. Which rooms: joined rooms come from the cached
   ``get_rooms_for_user_with_stream_ordering`` (invalidated before the
   notifier wakes us: the seeds' invariant); invites, knocks and leaves from
   ``local_current_membership`` (kept after the server left a room). On an
   incremental sync the in-memory change caches skip rooms without news.
2. A plan per room: the range of the stream it covers and the state the
   client already knows (nothing, or the state at ``since``).
3. Timeline rows of all planned rooms (StreamStore), events loaded in one
   batch, the timeline filter and history visibility applied (events after
   the user's current join are visible without a look-up), more rows read
   for rooms the filters thinned out (at most ``_MAX_ROUNDS``).
4. State: state groups of the few events whose state matters (the one
   before the timeline, the one at ``since``, the last one when a state
   change is missing from the timeline), read in one batch.
5. Summaries (m.heroes and member counts); invites and knocks as stripped
   state (stripped_state.py).

Several events writers: the tokens are vectors and "new since ``since``"
is decided per writer (``RoomStreamToken.includes``): a row of writer W is
in the response iff ``since.position_of(W) < stream_ordering <=
now.position_of(W)``. Queries read the covering range (since's minimum,
now's maximum] and the rows outside the exact range are dropped; the
in-memory change caches are asked with since's minimum, which can only
over-report. So every process delivers every event exactly once, in order,
whatever order the writers' rows reached it in.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import attrs

from atrium.events.event import Event
from atrium.events.serialize import serialize_event
from atrium.handlers.visibility import filter_events_for_client
from atrium.storage.stores import Stores
from atrium.storage.stores.directory import DirectoryStore
from atrium.storage.stores.roommember import RoomsForUser
from atrium.storage.stores.stream import EventRow, MembershipEntry, RoomSummaryData, StreamStore
from atrium.sync.change_cache import SyncChangeTracker
from atrium.sync.filtering import Filter
from atrium.sync.room_state import (
    MEMBER,
    StateKey,
    lazy_load_members,
    membership_at,
    state_for_entry,
)
from atrium.sync.sections import SyncRequest, joined_room_entry
from atrium.sync.stripped_state import stripped_state_entries
from atrium.sync.token import RoomStreamToken, StreamToken

# Rounds of reading older rows when filters leave a timeline short.
_MAX_ROUNDS = 3
# Rows read below since's maximum to find the last one a vector since covers.
_COVERED_PROBE = 20


@attrs.define
class RoomPlan:
    """What one room entry covers; filled step by step by the builder."""

    room_id: str
    kind: str  # "join" or "leave"
    # The stream range (lower, upper]: lower None = the room's whole history.
    lower: int | None
    upper: int
    # True when the client knows nothing of the room's state (initial sync,
    # newly joined, full_state); else it knows the state at `lower`.
    full: bool
    lazy: bool = False
    # Stream ordering of the user's current join (events after it are visible).
    joined_at: int | None = None
    rows: list[EventRow] = attrs.field(factory=list)
    exhausted: bool = False
    timeline: list[Event] = attrs.field(factory=list)
    limited: bool = False
    # Only the user's own membership event (a room never joined: rejected invite).
    minimal_event_id: str | None = None
    state_ids: dict[StateKey, str] = attrs.field(factory=dict)


@attrs.define
class RoomsStats:
    rooms: int = 0
    events: int = 0


class RoomsBuilder:
    def __init__(
        self,
        *,
        stores: Stores,
        stream: StreamStore,
        directory: DirectoryStore,
        tracker: SyncChangeTracker,
        clock: Any,
    ) -> None:
        self.stores = stores
        self.stream = stream
        self.directory = directory
        self.tracker = tracker
        self.clock = clock

    # -- entry point -------------------------------------------------------------
    async def build(self, req: SyncRequest, response: dict[str, Any]) -> RoomsStats:
        flt: Filter = req.filter
        user_id = req.user_id
        now = req.now.events
        upper_now = now.max_position
        since_token = req.since.events if req.since is not None else None
        # The lower bound of the covering range (exact per writer only with since_token).
        since = since_token.stream if since_token is not None else None
        members = self.stores.members

        joined_all = await members.get_rooms_for_user_with_stream_ordering(user_id)
        instances = await self._instances_of(
            [so for _, so in joined_all], [now] + ([since_token] if since_token else [])
        )
        joined_so = {
            room_id: so
            for room_id, so in joined_all
            if _includes(now, so, instances) and flt.allows_room(room_id)
        }
        req.joined_room_ids = frozenset(joined_so)

        # -- membership changes --------------------------------------------------
        if since is None:
            changes = await self.stream.get_local_membership_changes(user_id, None, now)
        elif self.tracker.memberships.has_entity_changed(user_id, since, upper_now):
            changes = await self.stream.get_local_membership_changes(user_id, since_token, now)
        else:
            changes = []
        changes = [c for c in changes if flt.allows_room(c.room_id)]
        invites = [c for c in changes if c.membership == "invite"]
        knocks = [c for c in changes if c.membership == "knock"]
        leaves: list[RoomsForUser] = []
        if since is not None or flt.include_leave:
            forgotten = await self.directory.get_forgotten_rooms(user_id)
            leaves = [
                c
                for c in changes
                if c.membership in ("leave", "ban") and c.room_id not in forgotten
            ]
        newly_joined: set[str] = set()
        join_candidates: set[str] = set()
        if since_token is not None:
            join_candidates = {c.room_id for c in changes if c.membership == "join"}
            # The joined-rooms cache itself says when the current join is new.
            join_candidates |= {
                r for r, so in joined_so.items() if not _includes(since_token, so, instances)
            }
            join_candidates &= set(joined_so)
        history = await self.stream.get_membership_history(
            user_id, join_candidates | {c.room_id for c in leaves}, now
        )
        if since_token is not None:
            newly_joined = {
                r for r in join_candidates if membership_at(history[r], since_token) != "join"
            }
        req.newly_joined_room_ids = frozenset(newly_joined)
        req.newly_left_room_ids = frozenset(c.room_id for c in leaves if since is not None)

        # -- plans -------------------------------------------------------------------
        plans = await self._plan_rooms(req, joined_so, newly_joined, leaves, history)
        await self._fill_timelines(req, plans)
        # Summaries of rooms new to the client first: lazy loading needs the heroes.
        summaries = dict(
            await self.stream.get_room_summaries([p.room_id for p in plans if _full_join(p)])
        )
        heroes = {r: s.heroes(user_id) for r, s in summaries.items()}
        await self._fill_state(req, plans, heroes)
        # Then those whose membership changed in the range.
        changed = [
            p.room_id
            for p in plans
            if p.kind == "join"
            and not _full_join(p)
            and (
                any(k[0] == MEMBER for k in p.state_ids)
                or any(e.type == MEMBER for e in p.timeline)
            )
        ]
        if changed:
            summaries.update(await self.stream.get_room_summaries(changed))
        stats = RoomsStats()
        rooms: dict[str, dict[str, Any]] = {"join": {}, "invite": {}, "leave": {}, "knock": {}}
        await self._write_entries(req, plans, summaries, response, rooms, stats)
        rooms["invite"] = await stripped_state_entries(self.stores, self.stream, invites, "invite")
        rooms["knock"] = await stripped_state_entries(self.stores, self.stream, knocks, "knock")
        stats.rooms += len(rooms["invite"]) + len(rooms["knock"])
        if any(rooms.values()):
            target = response.setdefault("rooms", {})
            for key, entries in rooms.items():
                target.setdefault(key, {}).update(entries)
        return stats

    async def _instances_of(
        self, orderings: Iterable[int], tokens: Sequence[RoomStreamToken]
    ) -> dict[int, str]:
        """The writers of the orderings whose inclusion in ``tokens`` depends on it."""
        wanted = {so for so in orderings if any(t.is_ambiguous(so) for t in tokens)}
        if not wanted:
            return {}
        return await self.stream.get_instances_for_orderings(wanted)

    # -- planning ----------------------------------------------------------------
    async def _plan_rooms(
        self,
        req: SyncRequest,
        joined_so: Mapping[str, int],
        newly_joined: Collection[str],
        leaves: Iterable[RoomsForUser],
        history: Mapping[str, list[MembershipEntry]],
    ) -> list[RoomPlan]:
        upper_now = req.now.events.max_position
        since = req.since.events.stream if req.since is not None else None
        lazy = req.filter.lazy_load_members and since is None
        plans: list[RoomPlan] = []
        if since is None:
            for room_id, so in joined_so.items():
                plans.append(RoomPlan(room_id, "join", None, upper_now, True, lazy, so))
        else:
            # Lazy loading is for initial syncs only; incremental syncs
            # (newly joined rooms included) send ordinary state.
            for room_id in newly_joined:
                plans.append(
                    RoomPlan(room_id, "join", None, upper_now, True, False, joined_so[room_id])
                )
            others = [r for r in joined_so if r not in newly_joined]
            if req.full_state:
                changed: Collection[str] = others
            else:
                known = self.tracker.rooms.get_entities_changed(others, since, upper_now)
                if known is None:
                    known = await self.stream.get_rooms_changed_between(others, since, upper_now)
                changed = known
            for room_id in changed:
                plans.append(
                    RoomPlan(
                        room_id, "join", since, upper_now, req.full_state, False, joined_so[room_id]
                    )
                )
        for leave in leaves:
            entries = history.get(leave.room_id, [])
            was_joined = any(
                e.membership == "join" and e.stream_ordering <= leave.stream_ordering
                for e in entries
            )
            plan = RoomPlan(leave.room_id, "leave", None, leave.stream_ordering, True, lazy)
            if not was_joined:
                plan.minimal_event_id = leave.event_id
            elif req.since is not None and membership_at(entries, req.since.events) == "join":
                # Joined at `since`: a delta from there, up to the leave.
                plan.lower, plan.full = since, req.full_state
            plans.append(plan)
        return plans

    # -- timelines ---------------------------------------------------------------
    async def _fetch_rows(
        self,
        plans: list[RoomPlan],
        upper_of: Mapping[str, int],
        limit: int,
        now: RoomStreamToken,
        since: StreamToken | None,
    ) -> None:
        """Read the next ``limit`` rows (below ``upper_of[room]``) of each plan."""
        by_range: dict[tuple[int | None, int], list[str]] = {}
        for plan in plans:
            by_range.setdefault((plan.lower, upper_of[plan.room_id]), []).append(plan.room_id)
        # Ranges closed at both ends below a plain (single-writer) token are
        # final: read them through the cache shared by every syncing user.
        cacheable = not now.instance_positions
        uncached: dict[str, tuple[int | None, int]] = {}
        fetched: dict[str, Sequence[EventRow]] = {}
        for (lower, upper), room_ids in by_range.items():
            if lower is not None and cacheable:
                fetched.update(
                    await self.stream.get_rooms_rows_in_range(room_ids, lower, upper, limit)
                )
            else:
                uncached.update((room_id, (lower, upper)) for room_id in room_ids)
        if uncached:
            fetched.update(await self.stream.get_room_event_rows(uncached, limit))
        for plan in plans:
            rows = fetched.get(plan.room_id) or ()
            plan.exhausted = len(rows) < limit
            plan.rows.extend(r for r in rows if _covered(r, plan, now, since))

    async def _fill_timelines(self, req: SyncRequest, plans: list[RoomPlan]) -> None:
        flt = req.filter.room.timeline
        limit = flt.limit
        now = req.now.events
        pending = [p for p in plans if p.minimal_event_id is None]
        # One more row than asked tells whether the timeline is limited.
        fetch = limit + 1
        upper_of = {p.room_id: p.upper for p in pending}
        chosen: dict[str, list[Event]] = {p.room_id: [] for p in pending}
        for round_number in range(_MAX_ROUNDS):
            if not pending:
                break
            start_index = {p.room_id: len(p.rows) for p in pending}
            await self._fetch_rows(pending, upper_of, fetch, now, req.since)
            new_rows = [r for p in pending for r in p.rows[start_index[p.room_id] :]]
            events = await self.stores.events.get_events([r.event_id for r in new_rows])
            candidates = [
                events[r.event_id]
                for r in new_rows
                if r.event_id in events and flt.check(events[r.event_id])
            ]
            visible = {e.event_id for e in await self._visible(req, plans, candidates)}
            still: list[RoomPlan] = []
            for plan in pending:
                kept = chosen[plan.room_id]
                for row in plan.rows[start_index[plan.room_id] :]:
                    if row.event_id in visible:
                        kept.append(events[row.event_id])
                if len(kept) > limit:
                    plan.limited = True
                elif not plan.exhausted and plan.rows and round_number + 1 < _MAX_ROUNDS:
                    upper_of[plan.room_id] = plan.rows[-1].stream_ordering - 1
                    still.append(plan)
                    continue
                else:
                    plan.limited = not plan.exhausted
            pending = still
            fetch = limit * 2 + 1
        for plan in plans:
            if plan.minimal_event_id is None:
                plan.timeline = list(reversed(chosen[plan.room_id][:limit]))
                if len(chosen[plan.room_id]) > limit:
                    plan.limited = True

    async def _visible(
        self, req: SyncRequest, plans: list[RoomPlan], events: list[Event]
    ) -> list[Event]:
        """History visibility (handlers/visibility.py), skipping the obvious cases."""
        joined_at = {p.room_id: p.joined_at for p in plans if p.joined_at is not None}
        user_id = req.user_id
        sure: list[Event] = []
        check: list[Event] = []
        for event in events:
            at = joined_at.get(event.room_id)
            so = event.internal_metadata.stream_ordering
            if (at is not None and so is not None and so >= at) or (
                event.type == MEMBER and event.state_key == user_id
            ):
                # After the user's current join, or about the user: always theirs to see.
                sure.append(event)
            else:
                check.append(event)
        if check:
            groups = await self.stores.state.get_state_groups_for_events(
                [e.event_id for e in check]
            )
            await self.stream.get_state_for_groups(groups.values())
            sure.extend(
                await filter_events_for_client(self.stores, user_id, check, req.joined_room_ids)
            )
        return sure

    # -- state ------------------------------------------------------------------------
    async def _fill_state(
        self, req: SyncRequest, plans: list[RoomPlan], heroes: Mapping[str, list[str]]
    ) -> None:
        """Work out each plan's ``state_ids`` (see room_state.state_for_entry).

        Each state is that after some event: the event just before the
        timeline (start), the last one of the range (end, only when a state
        change is missing from the timeline) and the last one at or before
        ``lower`` (what the client knows, or the start when nothing in the
        range precedes the timeline).
        """
        start_event: dict[str, str | None] = {}  # None: the state at `lower`
        end_event: dict[str, str] = {}
        needs_before: dict[str, tuple[int | None, int]] = {}
        active = [p for p in plans if p.minimal_event_id is None]
        for plan in active:
            timeline_ids = {e.event_id for e in plan.timeline}
            first = plan.timeline[0].internal_metadata.stream_ordering if plan.timeline else None
            if first is None:
                before, after = plan.rows, []
            else:
                index = next(i for i, r in enumerate(plan.rows) if r.stream_ordering == first)
                before, after = plan.rows[index + 1 :], plan.rows[: index + 1]
            if before:
                start_event[plan.room_id] = before[0].event_id
            elif plan.exhausted or first is None:
                start_event[plan.room_id] = None
            else:
                needs_before[plan.room_id] = (plan.lower, first - 1)
            if any(r.state_key is not None and r.event_id not in timeline_ids for r in after):
                end_event[plan.room_id] = plan.rows[0].event_id
        if needs_before:
            for room_id, found in (await self.stream.get_room_event_rows(needs_before, 1)).items():
                start_event[room_id] = found[0].event_id if found else None
        # The state at `lower`, where it matters.
        at_lower: dict[str, tuple[int | None, int]] = {}
        for plan in active:
            if plan.lower is None:
                continue
            uses_lower = start_event[plan.room_id] is None
            if (uses_lower and plan.full) or (
                not plan.full and (not uses_lower or plan.room_id in end_event)
            ):
                at_lower[plan.room_id] = (None, plan.lower)
        lower_event = await self._last_events_at(req, at_lower)
        # A timeline reaching the first event of the room we hold: the state
        # before that event. Usually the create event (state before: none),
        # but for a room joined over federation it is our join, whose
        # earlier history we never received (the state came with send_join).
        first_event = {
            p.room_id: p.timeline[0]
            for p in active
            if p.full
            and start_event[p.room_id] is None
            and p.timeline
            and p.room_id not in lower_event
        }
        wanted = {e for e in start_event.values() if e}
        wanted |= set(end_event.values()) | set(lower_event.values())
        wanted |= {e.event_id for e in first_event.values()}
        groups = await self.stores.state.get_state_groups_for_events(wanted)
        states = await self.stream.get_state_for_groups(groups.values())

        def state_of(event_id: str | None) -> Mapping[StateKey, str]:
            if not event_id or event_id not in groups:
                return {}
            return states[groups[event_id]]

        for plan in active:
            room_id = plan.room_id
            base = state_of(lower_event.get(room_id))
            known = {} if plan.full else base
            start_id = start_event[room_id]
            at_start = base if start_id is None else state_of(start_id)
            if room_id in first_event:
                at_start = _state_before_first(first_event[room_id], state_of)
            at_end = state_of(end_event[room_id]) if room_id in end_event else None
            timeline_ids = {e.event_id for e in plan.timeline}
            state = state_for_entry(
                known=known, at_start=at_start, at_end=at_end, timeline_event_ids=timeline_ids
            )
            if plan.lazy:
                wanted_members = {e.sender for e in plan.timeline}
                wanted_members.add(req.user_id)
                wanted_members.update(heroes.get(room_id, ()))
                state = lazy_load_members(state, wanted_members)
            plan.state_ids = state

    async def _last_events_at(
        self, req: SyncRequest, at_lower: Mapping[str, tuple[int | None, int]]
    ) -> dict[str, str]:
        """room -> the last event the client knows at each plan's ``lower``.

        A lower bound equal to since's minimum stands for the whole since
        token: with a vector token the last event it covers may be above the
        minimum (its writer was ahead), so a few rows below since's maximum
        are read and the newest covered one is taken.
        """
        found_ids: dict[str, str] = {}
        if not at_lower:
            return found_ids
        since = req.since.events if req.since is not None else None
        exact = {
            room_id: (None, since.max_position)
            for room_id, (_, lower) in at_lower.items()
            if since is not None and since.instance_positions and lower == since.stream
        }
        if exact:
            rows = await self.stream.get_room_event_rows(exact, _COVERED_PROBE)
            assert since is not None
            for room_id, room_rows in rows.items():
                covered = [
                    r for r in room_rows if since.includes(r.stream_ordering, r.instance_name)
                ]
                if covered:
                    found_ids[room_id] = covered[0].event_id
        rest = {r: rng for r, rng in at_lower.items() if r not in found_ids}
        if rest:
            for room_id, found in (await self.stream.get_room_event_rows(rest, 1)).items():
                if found:
                    found_ids[room_id] = found[0].event_id
        return found_ids

    # -- writing ----------------------------------------------------------------------
    async def _write_entries(
        self,
        req: SyncRequest,
        plans: list[RoomPlan],
        summaries: Mapping[str, RoomSummaryData],
        response: dict[str, Any],
        rooms: dict[str, dict[str, Any]],
        stats: RoomsStats,
    ) -> None:
        flt = req.filter
        wanted_ids = {e for p in plans for e in p.state_ids.values()}
        wanted_ids |= {p.minimal_event_id for p in plans if p.minimal_event_id}
        events = await self.stores.events.get_events(wanted_ids)
        now_ms = self.clock.time_msec()

        def serialize(event_list: Iterable[Event]) -> list[dict[str, Any]]:
            return [self._serialize(req, e, now_ms) for e in event_list]

        for plan in plans:
            if plan.minimal_event_id is not None:
                own = events.get(plan.minimal_event_id)
                timeline = [own] if own is not None else []
                state_events: list[Event] = []
            else:
                timeline = plan.timeline
                state_events = [events[e] for e in plan.state_ids.values() if e in events]
                state_events = flt.room.state.filter(state_events)
                state_events.sort(key=lambda e: e.internal_metadata.stream_ordering or 0)
            if (
                plan.kind == "join"
                and not plan.full
                and not timeline
                and not state_events
                and plan.room_id not in summaries
            ):
                continue
            entry: dict[str, Any]
            if plan.kind == "join":
                entry = joined_room_entry(response, plan.room_id)
                entry["unread_notifications"] = {"notification_count": 0, "highlight_count": 0}
                summary = summaries.get(plan.room_id)
                if summary is not None:
                    entry["summary"] = {
                        "m.heroes": summary.heroes(req.user_id),
                        "m.joined_member_count": summary.joined,
                        "m.invited_member_count": summary.invited,
                    }
                rooms["join"][plan.room_id] = entry
            else:
                entry = {"account_data": {"events": []}}
                rooms["leave"][plan.room_id] = entry
            entry["timeline"] = {
                "events": serialize(timeline),
                "limited": plan.limited,
                "prev_batch": self._prev_batch(req, plan, timeline),
            }
            entry["state"] = {"events": serialize(state_events)}
            stats.rooms += 1
            stats.events += len(timeline)

    def _prev_batch(self, req: SyncRequest, plan: RoomPlan, timeline: list[Event]) -> str:
        """A token /messages accepts as ``from``, just before the timeline (spec "Syncing")."""
        if not plan.limited and plan.lower is not None and req.since is not None:
            return req.since.to_string()
        if timeline:
            first = timeline[0].internal_metadata.stream_ordering or 0
            position = max(first - 1, 0)
        else:
            position = plan.upper
        return req.now.copy_and_replace("events", RoomStreamToken(position)).to_string()

    def _serialize(self, req: SyncRequest, event: Event, now_ms: int) -> dict[str, Any]:
        flt: Filter = req.filter
        if flt.event_format == "federation":
            data = event.get_pdu_json()
        else:
            data = serialize_event(
                event,
                now_ms,
                requester_user_id=req.user_id,
                requester_device_id=req.device_id,
                include_room_id=False,
            )
        return flt.apply_event_fields(data)


def _full_join(plan: RoomPlan) -> bool:
    return plan.kind == "join" and plan.full


def _includes(token: RoomStreamToken, stream_ordering: int, instances: Mapping[int, str]) -> bool:
    """``token.includes`` for an ordering whose writer is in ``instances`` when it matters."""
    if not token.is_ambiguous(stream_ordering):
        return stream_ordering <= token.stream
    instance = instances.get(stream_ordering)
    return instance is not None and token.includes(stream_ordering, instance)


def _covered(
    row: EventRow, plan: RoomPlan, now: RoomStreamToken, since: StreamToken | None
) -> bool:
    """Whether a row is inside the tokens' exact ranges (vector tokens: per writer)."""
    if row.stream_ordering > now.position_of(row.instance_name):
        return False
    if plan.lower is not None and since is not None and plan.lower == since.events.stream:
        return row.stream_ordering > since.events.position_of(row.instance_name)
    return True


def _state_before_first(
    event: Event, state_of: Callable[[str | None], Mapping[StateKey, str]]
) -> Mapping[StateKey, str]:
    """The state before ``event`` as far as the client needs it: the state
    after it without the entry it set itself (the timeline carries that)."""
    after = state_of(event.event_id)
    if event.state_key is None:
        return after
    key = (event.type, event.state_key)
    return {k: v for k, v in after.items() if not (k == key and v == event.event_id)}
