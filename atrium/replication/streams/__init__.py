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


def _load_all() -> None:
    """Import every stream module so each registers itself: adding a stream is one file."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_load_all()

__all__ = ["STREAMS", "Stream", "StreamRow", "StreamUpdates", "register_stream"]
