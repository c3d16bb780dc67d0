"""One module per stream; ``STREAMS`` maps stream names to their classes."""

from __future__ import annotations

from atrium.replication.streams._base import Stream, StreamRow, StreamUpdates

STREAMS: dict[str, type[Stream]] = {}


def register_stream(cls: type[Stream]) -> type[Stream]:
    """Class decorator adding a stream to the registry under its NAME."""
    if cls.NAME in STREAMS and STREAMS[cls.NAME] is not cls:
        raise ValueError(f"stream {cls.NAME!r} registered twice")
    STREAMS[cls.NAME] = cls
    return cls


__all__ = ["STREAMS", "Stream", "StreamRow", "StreamUpdates", "register_stream"]
