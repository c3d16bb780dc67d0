"""send_events to another process carries what only the sender knows.

A federation event whose prev_events we lack gets its state before from the
remote server (/state_ids), and one failing auth is stored rejected. When the
room's events writer is another process, both must survive the trip through
the send_events replication endpoint: otherwise the writer cannot compute the
event's state at all (missing prev_events), or serves a rejected event.
"""

from __future__ import annotations

import pytest_twisted

from atrium.handlers.event_writer import writer_for_room
from atrium.state.context import compute_event_context
from tests.conftest import POSTGRES_URL, requires_postgres
from tests.support.client import q
from tests.support.events import make_pdu
from tests.workers.inprocess import caught_up, client_for, in_process_deployment

pytestmark = requires_postgres

V3 = "/_matrix/client/v3"
WRITERS = ["event_writer1", "event_writer2"]


async def _event_after_a_gap(master, room_id: str, sender: str, body: str):
    """A message whose prev_event is unknown here, with the room's state given outright."""
    state = await master.stores.members.get_current_state_ids(room_id)
    version = (await master.stores.events.get_event(state[("m.room.create", "")])).room_version
    event = make_pdu(
        version,
        type="m.room.message",
        sender=sender,
        content={"msgtype": "m.text", "body": body},
        room_id=room_id,
        prev_events=["$never-seen-by-anyone"],
        auth_events=[
            state[("m.room.create", "")],
            state[("m.room.power_levels", "")],
            state[("m.room.member", sender)],
        ],
        depth=100,
    )
    context = await compute_event_context(
        event, master.stores.state, master.resolver, state_ids_before=state
    )
    return event, context, state


@pytest_twisted.ensureDeferred
async def test_given_state_and_rejection_reach_a_remote_writer(tmp_path):
    workers = [("event_writer", 2)]
    async with in_process_deployment(tmp_path, POSTGRES_URL, workers) as (servers, _bus):
        master = servers["master"]
        alice = await client_for(master).register("alice")
        created = await alice.post(f"{V3}/createRoom", {"preset": "public_chat"})
        room_id = created.json["room_id"]
        writer = servers[writer_for_room(room_id, WRITERS)]
        await caught_up(servers)

        # Accepted, with the given state as its state before.
        event, context, state = await _event_after_a_gap(master, room_id, alice.user_id, "ok")
        await master.event_sender.send_events([(event, context)])
        stored = await writer.stores.events.get_event(event.event_id)
        assert stored.rejected_reason is None
        assert dict(await writer.stores.state.get_state_ids_for_event(event.event_id)) == dict(
            state
        )

        # Rejected on the sender: stored rejected by the writer, never served.
        bad, bad_context, _ = await _event_after_a_gap(master, room_id, alice.user_id, "no")
        bad.rejected_reason = "test: not allowed"
        await master.event_sender.send_events([(bad, bad_context.with_rejection("test: no"))])
        stored = await writer.stores.events.get_event(bad.event_id, allow_rejected=True)
        assert stored.rejected_reason == "test: no"
        assert await writer.stores.events.get_event(bad.event_id, allow_none=True) is None
        await caught_up(servers)
        messages = await alice.get(
            f"{V3}/rooms/{q(room_id)}/messages", query={"dir": "b", "limit": "50"}
        )
        bodies = [e["content"].get("body") for e in messages.json["chunk"]]
        assert "ok" in bodies and "no" not in bodies
