"""What other servers may read from us over federation: events, state, auth
chains, history (``/backfill``, ``/get_missing_events``).

Access control (server-server API, the 403 answers of these endpoints, and
"Retrieving events"): a server sees an event when, in the state at that
event, the room is ``world_readable``, one of its users is joined, or (for
``invited`` visibility) invited, or when the visibility is ``shared`` and one
of its users is joined now. Room-wide reads (state, auth chains, history)
need the server to be in the room now (or the room to be world readable).
History a server may not see is served *redacted*, so the DAG stays whole.
Rejected events are never served; soft-failed ones are (spec "Soft failure").
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Sequence
from typing import Any

from atrium.errors import Forbidden, NotFound
from atrium.events.event import Event
from atrium.state.context import StateResolver
from atrium.storage.stores import Stores
from atrium.storage.stores.state import StateMap
from atrium.util.clock import Clock

HISTORY_VISIBILITY = ("m.room.history_visibility", "")
MAX_BACKFILL = 100
MAX_MISSING_EVENTS = 20


def _host(user_id: str) -> str:
    return user_id.split(":", 1)[-1]


class FederationReadHandler:
    def __init__(
        self, *, stores: Stores, resolver: StateResolver, clock: Clock, server_name: str
    ) -> None:
        self.stores = stores
        self.resolver = resolver
        self.clock = clock
        self.server_name = server_name

    def transaction(self, pdus: Sequence[Event]) -> dict[str, Any]:
        """The single/unlimited PDU transaction shape (/event, /backfill)."""
        return {
            "origin": self.server_name,
            "origin_server_ts": self.clock.time_msec(),
            "pdus": [e.get_pdu_json() for e in pdus],
        }

    # -- access ---------------------------------------------------------------------------------
    async def _world_readable_now(self, room_id: str) -> bool:
        current = await self.stores.members.get_current_state_ids(room_id)
        vis_id = current.get(HISTORY_VISIBILITY)
        if vis_id is None:
            return False
        vis = await self.stores.events.get_event(vis_id, allow_none=True)
        return vis is not None and vis.content.get("history_visibility") == "world_readable"

    async def check_in_room(self, origin: str, room_id: str) -> None:
        """403 unless ``origin`` is in the room now (or the room is world readable)."""
        if await self.stores.rooms.get_room_version_id(room_id) is None:
            raise NotFound(f"Unknown room {room_id}")
        if await self.stores.members.is_host_joined(room_id, origin):
            return
        if await self._world_readable_now(room_id):
            return
        raise Forbidden(f"{origin} is not in room {room_id}")

    async def visible_to_server(self, origin: str, events: Sequence[Event]) -> set[str]:
        """IDs of the events ``origin`` may see (see module doc)."""
        if not events:
            return set()
        room_ids = {e.room_id for e in events}
        joined_now = {r for r in room_ids if await self.stores.members.is_host_joined(r, origin)}
        groups = await self.stores.state.get_state_groups_for_events([e.event_id for e in events])
        visible: set[str] = set()
        states: dict[int, StateMap] = {}
        for event in events:
            group = groups.get(event.event_id)
            if group is None:
                # Outliers have no state: only servers in the room see them.
                if event.room_id in joined_now:
                    visible.add(event.event_id)
                continue
            if group not in states:
                states[group] = await self.stores.state.get_state_ids_for_group(
                    group, types=[HISTORY_VISIBILITY, ("m.room.member", None)]
                )
            if await self._allowed(origin, states[group], event.room_id in joined_now):
                visible.add(event.event_id)
        return visible

    async def _allowed(self, origin: str, state: StateMap, joined_now: bool) -> bool:
        visibility = "shared"
        vis_id = state.get(HISTORY_VISIBILITY)
        if vis_id is not None:
            vis = await self.stores.events.get_event(vis_id, allow_none=True)
            value = vis.content.get("history_visibility") if vis is not None else None
            if value in ("world_readable", "shared", "invited", "joined"):
                visibility = value
        if visibility == "world_readable":
            return True
        member_ids = [
            event_id
            for (etype, state_key), event_id in state.items()
            if etype == "m.room.member" and _host(state_key) == origin
        ]
        members = await self.stores.events.get_events(member_ids)
        memberships = {m.membership for m in members.values()}
        if "join" in memberships:
            return True
        if visibility == "invited" and "invite" in memberships:
            return True
        return visibility == "shared" and joined_now

    async def _served(self, origin: str, events: Sequence[Event]) -> list[Event]:
        """Events as ``origin`` may have them: redacted where it may not see them."""
        visible = await self.visible_to_server(origin, events)
        return [e if e.event_id in visible else e.pruned() for e in events]

    # -- single events --------------------------------------------------------------------------
    async def get_event(self, origin: str, event_id: str) -> dict[str, Any]:
        event = await self.stores.events.get_event(event_id, allow_none=True)
        if event is None:
            raise NotFound(f"Unknown event {event_id}")
        if event.event_id not in await self.visible_to_server(origin, [event]):
            raise Forbidden("You are not allowed to see this event")
        return self.transaction([event])

    async def _event_in_room(self, room_id: str, event_id: str) -> Event:
        event = await self.stores.events.get_event(event_id, allow_none=True)
        if event is None or event.room_id != room_id:
            raise NotFound(f"Could not find event {event_id}")
        return event

    # -- state ----------------------------------------------------------------------------------------
    async def state_before(self, event: Event) -> StateMap:
        """The room state before ``event`` (its prev_events' state, resolved if they fork)."""
        if event.internal_metadata.outlier:
            raise NotFound(f"No state known at {event.event_id}")
        prevs = event.prev_event_ids()
        if not prevs:
            return {}
        groups = await self.stores.state.get_state_groups_for_events(prevs)
        distinct = sorted(set(groups.values()))
        if len(groups) != len(set(prevs)) or not distinct:
            raise NotFound(f"No state known at {event.event_id}")
        if len(distinct) == 1:
            return await self.stores.state.get_state_ids_for_group(distinct[0])
        return await self.resolver.resolve_groups(event.room_id, event.room_version, distinct)

    async def get_state_ids(self, origin: str, room_id: str, event_id: str) -> dict[str, Any]:
        await self.check_in_room(origin, room_id)
        state = await self.state_before(await self._event_in_room(room_id, event_id))
        state_ids = sorted(state.values())
        chain = await self.stores.events.get_auth_chain_ids(state_ids)
        return {"pdu_ids": state_ids, "auth_chain_ids": sorted(chain)}

    async def get_state(self, origin: str, room_id: str, event_id: str) -> dict[str, Any]:
        await self.check_in_room(origin, room_id)
        state = await self.state_before(await self._event_in_room(room_id, event_id))
        state_events = await self.stores.events.get_events_as_list(sorted(state.values()))
        chain = await self.stores.events.get_auth_chain_ids([e.event_id for e in state_events])
        chain_events = await self.stores.events.get_events_as_list(sorted(chain))
        return {
            "pdus": [e.get_pdu_json() for e in state_events],
            "auth_chain": [e.get_pdu_json() for e in chain_events],
        }

    async def get_event_auth(self, origin: str, room_id: str, event_id: str) -> dict[str, Any]:
        await self.check_in_room(origin, room_id)
        event = await self._event_in_room(room_id, event_id)
        chain = await self.stores.events.get_auth_chain_ids([event.event_id])
        chain_events = await self.stores.events.get_events_as_list(sorted(chain))
        return {"auth_chain": [e.get_pdu_json() for e in chain_events]}

    # -- history ----------------------------------------------------------------------------------------
    async def backfill(
        self, origin: str, room_id: str, from_ids: Collection[str], limit: int
    ) -> dict[str, Any]:
        """``from_ids`` and the events before them, newest (deepest) first."""
        await self.check_in_room(origin, room_id)
        limit = max(0, min(limit, MAX_BACKFILL))
        found: list[Event] = []
        seen: set[str] = set()
        heap: list[tuple[int, str]] = []
        start = await self.stores.events.get_events(list(from_ids))
        for first in start.values():
            if first.room_id == room_id:
                heapq.heappush(heap, (-first.depth, first.event_id))
                seen.add(first.event_id)
        pending = dict(start)
        while heap and len(found) < limit:
            _, event_id = heapq.heappop(heap)
            event = pending.get(event_id)
            if event is None:
                continue
            del pending[event_id]
            found.append(event)
            prevs = [p for p in event.prev_event_ids() if p not in seen]
            seen.update(prevs)
            for prev in (await self.stores.events.get_events(prevs)).values():
                if prev.room_id == room_id:
                    pending[prev.event_id] = prev
                    heapq.heappush(heap, (-prev.depth, prev.event_id))
        return self.transaction(await self._served(origin, found))

    async def get_missing_events(
        self,
        origin: str,
        room_id: str,
        earliest: Collection[str],
        latest: Collection[str],
        limit: int,
        min_depth: int,
    ) -> dict[str, Any]:
        """Walk prev_events back from ``latest``, stopping at ``earliest`` (oldest first)."""
        await self.check_in_room(origin, room_id)
        limit = max(0, min(limit, MAX_MISSING_EVENTS))
        stop = set(earliest)
        seen = set(latest) | stop
        result: list[Event] = []
        frontier = [
            e
            for e in (await self.stores.events.get_events(list(latest))).values()
            if e.room_id == room_id
        ]
        while frontier and len(result) < limit:
            wanted = [p for e in frontier for p in e.prev_event_ids() if p not in seen]
            seen.update(wanted)
            fetched = await self.stores.events.get_events(wanted)
            frontier = []
            for prev_id in wanted:
                prev = fetched.get(prev_id)
                if prev is None or prev.room_id != room_id or prev.depth < min_depth:
                    continue
                if len(result) >= limit:
                    break
                result.append(prev)
                frontier.append(prev)
        result.sort(key=lambda e: (e.depth, e.event_id))
        served = await self._served(origin, result)
        return {"events": [e.get_pdu_json() for e in served]}
