"""Which state a /sync room entry sends (room_state.py)."""

from __future__ import annotations

from atrium.sync.room_state import lazy_load_members, membership_at, state_for_entry


def test_initial_state_is_the_state_at_timeline_start():
    at_start = {("m.room.create", ""): "$c", ("m.room.name", ""): "$n1"}
    state = state_for_entry(known={}, at_start=at_start, at_end=None, timeline_event_ids={"$m"})
    assert state == at_start


def test_delta_leaves_out_what_the_client_knows_and_the_timeline_carries():
    known = {("m.room.create", ""): "$c", ("m.room.name", ""): "$n1"}
    at_start = {("m.room.create", ""): "$c", ("m.room.name", ""): "$n2", ("m.room.topic", ""): "$t"}
    state = state_for_entry(known=known, at_start=at_start, at_end=None, timeline_event_ids={"$t"})
    assert state == {("m.room.name", ""): "$n2"}


def test_state_changes_missing_from_the_timeline_are_sent():
    known = {("m.room.name", ""): "$n1"}
    at_start = {("m.room.name", ""): "$n1"}
    at_end = {("m.room.name", ""): "$n2", ("m.room.topic", ""): "$t"}
    # The timeline filter kept only messages: $n2 and $t are not in it.
    state = state_for_entry(
        known=known, at_start=at_start, at_end=at_end, timeline_event_ids={"$m"}
    )
    assert state == {("m.room.name", ""): "$n2", ("m.room.topic", ""): "$t"}
    # When the timeline carries them, they are not repeated.
    state = state_for_entry(
        known=known, at_start=at_start, at_end=at_end, timeline_event_ids={"$n2", "$t"}
    )
    assert state == {}


def test_lazy_loading_keeps_only_wanted_members():
    state = {
        ("m.room.create", ""): "$c",
        ("m.room.member", "@a:hs"): "$a",
        ("m.room.member", "@b:hs"): "$b",
        ("m.room.member", "@c:hs"): "$c2",
    }
    assert lazy_load_members(state, {"@a:hs", "@c:hs"}) == {
        ("m.room.create", ""): "$c",
        ("m.room.member", "@a:hs"): "$a",
        ("m.room.member", "@c:hs"): "$c2",
    }


def test_membership_at_a_position():
    history = [("invite", 3), ("join", 5), ("leave", 9)]
    assert membership_at(history, 2) is None
    assert membership_at(history, 3) == "invite"
    assert membership_at(history, 8) == "join"
    assert membership_at(history, 100) == "leave"
