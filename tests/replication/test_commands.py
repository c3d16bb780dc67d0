"""Replication command lines: every command round-trips, bad lines are dropped (never raise)."""

from __future__ import annotations

import logging

import pytest

from atrium.replication.commands import (
    COMMAND_TYPES,
    ClearUserSyncCommand,
    ErrorCommand,
    FederationAckCommand,
    NameCommand,
    PingCommand,
    PositionCommand,
    RdataCommand,
    RemoteServerUpCommand,
    ReplicateCommand,
    UserSyncCommand,
    parse_command,
    parse_lines,
)

EXAMPLES = [
    (NameCommand("event_writer1"), "NAME event_writer1"),
    (PingCommand(1700000000123), "PING 1700000000123"),
    (PingCommand(1700000000123, "sync1"), "PING 1700000000123 sync1"),
    (ReplicateCommand(), "REPLICATE"),
    (PositionCommand("events", "master", 10, 12), "POSITION events master 10 12"),
    (PositionCommand("events", "master", -5, -3), "POSITION events master -5 -3"),
    (
        RdataCommand("events", "w1", 12, ["$e:x", "!r:x", None, True]),
        'RDATA events w1 12 ["$e:x","!r:x",null,true]',
    ),
    (RdataCommand("caches", "w1", None, ["c", None, 5]), 'RDATA caches w1 batch ["c",null,5]'),
    (UserSyncCommand("sync1", "@a:hs", True, 99), "USER_SYNC sync1 @a:hs start 99"),
    (UserSyncCommand("sync1", "@a:hs", False, 100), "USER_SYNC sync1 @a:hs end 100"),
    (ClearUserSyncCommand("sync1"), "CLEAR_USER_SYNC sync1"),
    (FederationAckCommand("fed1", 42), "FEDERATION_ACK fed1 42"),
    (RemoteServerUpCommand("other.example:8448"), "REMOTE_SERVER_UP other.example:8448"),
    (ErrorCommand("unknown stream foo"), "ERROR unknown stream foo"),
]


@pytest.mark.parametrize(("command", "line"), EXAMPLES, ids=[c.NAME for c, _ in EXAMPLES])
def test_command_to_line_and_back(command, line):
    """to_line gives the documented wire form and parse_command reads it back equal."""
    assert command.to_line() == line
    assert parse_command(line) == command


def test_every_command_type_has_an_example():
    assert {c.NAME for c, _ in EXAMPLES} == set(COMMAND_TYPES)


def test_rdata_row_with_newlines_and_spaces_stays_one_line():
    """JSON escapes newlines, so a row with text in it never splits a message."""
    command = RdataCommand("events", "w1", 3, ["a b\nc", {"k": "v w"}])
    line = command.to_line()
    assert "\n" not in line
    assert parse_command(line) == command


def test_error_message_is_collapsed_to_one_line():
    command = ErrorCommand("bad\nthing  here")
    assert command.to_line() == "ERROR bad thing here"


@pytest.mark.parametrize(
    "line",
    [
        "",
        "HELLO world",
        "position events master 1 2",  # names are case-sensitive
        "POSITION events master 1",
        "POSITION events master 1 2 3",
        "POSITION events master one 2",
        "POSITION events master 1 +2",
        "POSITION events  master 1 2",
        "POSITION events master 1 2_0",
        "RDATA events master 5",
        "RDATA events master five [1]",
        "RDATA events master 5 [1, 2",
        "RDATA events master 5 not json",
        "PING",
        "PING soon",
        "PING 5 sync1 extra",
        "PING 5  sync1",
        "REPLICATE events",
        "USER_SYNC sync1 @a:hs maybe 5",
        "USER_SYNC sync1 @a:hs start",
        "FEDERATION_ACK fed1",
        "FEDERATION_ACK fed1 x",
        "NAME",
        "NAME two words",
        "CLEAR_USER_SYNC",
        "REMOTE_SERVER_UP ",
    ],
)
def test_malformed_line_is_logged_and_dropped(line, caplog):
    with caplog.at_level(logging.WARNING, logger="atrium.replication.commands"):
        assert parse_command(line) is None
    assert "Dropping" in caplog.text


def test_identifiers_with_whitespace_cannot_be_built():
    """to_line could not be parsed back, so such commands are refused up front."""
    with pytest.raises(ValueError):
        PositionCommand("events", "bad name", 1, 2)
    with pytest.raises(ValueError):
        UserSyncCommand("w", "", True, 1)


def test_parse_lines_keeps_good_lines_in_order_and_skips_bad_ones():
    text = "\n".join(
        [
            'RDATA caches w1 batch ["a",null,1]',
            "garbage here",
            'RDATA caches w1 7 ["b",null,1]',
            "",
            "POSITION caches w1 6 7",
        ]
    )
    commands = parse_lines(text)
    assert [c.NAME for c in commands] == ["RDATA", "RDATA", "POSITION"]
    assert commands[0].token is None and commands[1].token == 7
