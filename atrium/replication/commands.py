"""The replication commands: one line of text each, ``NAME args``.

Every process speaks these over the bus (Redis pub/sub, or the in-process
bus of the embedded default). One class per command, each with ``NAME``,
``from_line(args)`` (raises ``ValueError`` on a malformed line) and
``to_line()``. ``parse_command(line)`` is what the transport calls: a bad
line is logged and dropped (``None``), never an exception, so one broken or
newer peer cannot stop a process from replicating.

Identifiers (stream names, instance names, user IDs, server names) are
single tokens: they may not contain whitespace, which the constructors
enforce, so ``to_line`` always produces a line ``from_line`` reads back.
"""

from __future__ import annotations

import abc
import json
import logging
from typing import Any, ClassVar

import attrs

logger = logging.getLogger(__name__)

# RDATA with this instead of a token: more rows of the same token follow.
BATCH_TOKEN = "batch"


def _check_word(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError(f"{what} must be a non-empty string without whitespace: {value!r}")
    return value


def _parse_int(value: str, what: str) -> int:
    # int() accepts "+1", " 1" and "1_000"; a token is plain decimal digits.
    text = value[1:] if value.startswith("-") else value
    if not text.isdigit() or not text.isascii():
        raise ValueError(f"{what} is not an integer: {value!r}")
    return int(value)


def _split(args: str, n: int, what: str) -> list[str]:
    parts = args.split(" ")
    if len(parts) != n or any(not p for p in parts):
        raise ValueError(f"{what} takes {n} arguments separated by single spaces: {args!r}")
    return parts


class Command(abc.ABC):
    NAME: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def from_line(cls, args: str) -> Command:
        """Build the command from the text after ``NAME ``; ValueError if malformed."""

    @abc.abstractmethod
    def to_args(self) -> str:
        """The text after ``NAME `` (empty for commands without arguments)."""

    def to_line(self) -> str:
        args = self.to_args()
        return f"{self.NAME} {args}" if args else self.NAME


@attrs.frozen
class NameCommand(Command):
    """A process announcing itself (its instance name) on (re)connecting."""

    NAME = "NAME"
    name: str = attrs.field(validator=lambda _s, _a, v: _check_word(v, "name"))

    @classmethod
    def from_line(cls, args: str) -> NameCommand:
        return cls(args)

    def to_args(self) -> str:
        return self.name


def _check_optional_word(value: str | None, what: str) -> str | None:
    return None if value is None else _check_word(value, what)


@attrs.frozen
class PingCommand(Command):
    """Liveness: ``PING <ts> [<instance>]``, sent periodically by every process.

    A process hears its own PINGs while its link is healthy; the master
    notes when it last heard each instance and treats one silent for too
    long as dead (its syncing users are cleared).
    """

    NAME = "PING"
    ts: int
    instance_name: str | None = attrs.field(
        default=None, validator=lambda _s, _a, v: _check_optional_word(v, "instance")
    )

    @classmethod
    def from_line(cls, args: str) -> PingCommand:
        parts = args.split(" ")
        if len(parts) == 1:
            return cls(_parse_int(parts[0], "PING timestamp"))
        ts, instance = _split(args, 2, "PING")
        return cls(_parse_int(ts, "PING timestamp"), instance)

    def to_args(self) -> str:
        if self.instance_name is None:
            return str(self.ts)
        return f"{self.ts} {self.instance_name}"


@attrs.frozen
class ReplicateCommand(Command):
    """Asks every writer to announce (POSITION) each stream it writes."""

    NAME = "REPLICATE"

    @classmethod
    def from_line(cls, args: str) -> ReplicateCommand:
        if args.strip():
            raise ValueError(f"REPLICATE takes no arguments: {args!r}")
        return cls()

    def to_args(self) -> str:
        return ""


@attrs.frozen
class PositionCommand(Command):
    """``instance`` advanced ``stream`` from ``prev_token`` to ``new_token``.

    Every row of that writer in (prev_token, new_token] was sent as RDATA
    just before this (in the same bus message); a process that has applied
    less than ``prev_token`` missed rows and fetches them.
    """

    NAME = "POSITION"
    stream_name: str = attrs.field(validator=lambda _s, _a, v: _check_word(v, "stream"))
    instance_name: str = attrs.field(validator=lambda _s, _a, v: _check_word(v, "instance"))
    prev_token: int
    new_token: int

    @classmethod
    def from_line(cls, args: str) -> PositionCommand:
        stream, instance, prev, new = _split(args, 4, "POSITION")
        return cls(stream, instance, _parse_int(prev, "prev_token"), _parse_int(new, "new_token"))

    def to_args(self) -> str:
        return f"{self.stream_name} {self.instance_name} {self.prev_token} {self.new_token}"


@attrs.frozen
class RdataCommand(Command):
    """One row of a stream; ``token`` None means "batch": more rows of the
    same token follow, and the last row of the token carries it."""

    NAME = "RDATA"
    stream_name: str = attrs.field(validator=lambda _s, _a, v: _check_word(v, "stream"))
    instance_name: str = attrs.field(validator=lambda _s, _a, v: _check_word(v, "instance"))
    token: int | None
    row: Any

    @classmethod
    def from_line(cls, args: str) -> RdataCommand:
        parts = args.split(" ", 3)
        if len(parts) != 4:
            raise ValueError(f"RDATA takes stream, instance, token and a JSON row: {args!r}")
        stream, instance, token_text, row_json = parts
        token = None if token_text == BATCH_TOKEN else _parse_int(token_text, "RDATA token")
        try:
            row = json.loads(row_json)
        except ValueError:
            raise ValueError(f"RDATA row is not JSON: {row_json[:100]!r}") from None
        return cls(stream, instance, token, row)

    def to_args(self) -> str:
        token = BATCH_TOKEN if self.token is None else str(self.token)
        # json.dumps escapes newlines inside strings, so the row stays one line.
        row = json.dumps(self.row, ensure_ascii=False, separators=(",", ":"))
        return f"{self.stream_name} {self.instance_name} {token} {row}"


@attrs.frozen
class UserSyncCommand(Command):
    """A worker's user started or stopped syncing (presence is kept right by the master)."""

    NAME = "USER_SYNC"
    instance_name: str = attrs.field(validator=lambda _s, _a, v: _check_word(v, "instance"))
    user_id: str = attrs.field(validator=lambda _s, _a, v: _check_word(v, "user_id"))
    is_syncing: bool
    last_sync_ms: int

    @classmethod
    def from_line(cls, args: str) -> UserSyncCommand:
        instance, user_id, state, ts = _split(args, 4, "USER_SYNC")
        if state not in ("start", "end"):
            raise ValueError(f"USER_SYNC state must be start or end: {state!r}")
        return cls(instance, user_id, state == "start", _parse_int(ts, "USER_SYNC timestamp"))

    def to_args(self) -> str:
        state = "start" if self.is_syncing else "end"
        return f"{self.instance_name} {self.user_id} {state} {self.last_sync_ms}"


@attrs.frozen
class ClearUserSyncCommand(Command):
    """Every user syncing on ``instance`` stopped (it is shutting down or died)."""

    NAME = "CLEAR_USER_SYNC"
    instance_name: str = attrs.field(validator=lambda _s, _a, v: _check_word(v, "instance"))

    @classmethod
    def from_line(cls, args: str) -> ClearUserSyncCommand:
        return cls(args)

    def to_args(self) -> str:
        return self.instance_name


@attrs.frozen
class FederationAckCommand(Command):
    """The federation sender on ``instance`` has handled the federation stream up to ``token``."""

    NAME = "FEDERATION_ACK"
    instance_name: str = attrs.field(validator=lambda _s, _a, v: _check_word(v, "instance"))
    token: int

    @classmethod
    def from_line(cls, args: str) -> FederationAckCommand:
        instance, token = _split(args, 2, "FEDERATION_ACK")
        return cls(instance, _parse_int(token, "FEDERATION_ACK token"))

    def to_args(self) -> str:
        return f"{self.instance_name} {self.token}"


@attrs.frozen
class RemoteServerUpCommand(Command):
    """A remote server we had backed off from answered again: retry sending to it now."""

    NAME = "REMOTE_SERVER_UP"
    server_name: str = attrs.field(validator=lambda _s, _a, v: _check_word(v, "server"))

    @classmethod
    def from_line(cls, args: str) -> RemoteServerUpCommand:
        return cls(args)

    def to_args(self) -> str:
        return self.server_name


@attrs.frozen
class ErrorCommand(Command):
    """A human-readable complaint about a command a process could not handle."""

    NAME = "ERROR"
    message: str = attrs.field(converter=lambda v: " ".join(str(v).split()))

    @classmethod
    def from_line(cls, args: str) -> ErrorCommand:
        return cls(args)

    def to_args(self) -> str:
        return self.message


COMMAND_TYPES: dict[str, type[Command]] = {
    cls.NAME: cls
    for cls in (
        NameCommand,
        PingCommand,
        ReplicateCommand,
        PositionCommand,
        RdataCommand,
        UserSyncCommand,
        ClearUserSyncCommand,
        FederationAckCommand,
        RemoteServerUpCommand,
        ErrorCommand,
    )
}


def parse_command(line: str) -> Command | None:
    """The command on ``line``, or None (logged) if it is unknown or malformed."""
    line = line.rstrip("\r\n")
    name, _, args = line.partition(" ")
    cls = COMMAND_TYPES.get(name)
    if cls is None:
        logger.warning("Dropping replication line with unknown command: %.200r", line)
        return None
    try:
        return cls.from_line(args)
    except (ValueError, TypeError) as e:
        logger.warning("Dropping malformed replication line %.200r: %s", line, e)
        return None


def parse_lines(text: str) -> list[Command]:
    """Every well-formed command of a multi-line bus message, in order."""
    commands = []
    for line in text.split("\n"):
        if line.strip():
            command = parse_command(line)
            if command is not None:
                commands.append(command)
    return commands
