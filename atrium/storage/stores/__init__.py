"""The read stores, one per domain, and how to build them together.

    registry = CacheRegistry()
    invalidator = LocalCacheInvalidator(registry)
    stores = await build_stores(db, invalidator)
    stores.register_caches(registry)

Each store holds the DatabasePool, its own caches and id generators; they
are composed (a store that needs another gets it as a constructor argument),
never mixed into one class. Event writes are a separate object,
``atrium.storage.persist_events.PersistEventStore``, built only where events
are written (see ``atrium.storage.persistence.build_event_persister``).
"""

from __future__ import annotations

import attrs

from atrium.storage.database import DatabasePool
from atrium.storage.stores.events import EVENT_CACHE_NAME, EventsStore
from atrium.storage.stores.invalidation import CacheInvalidator, LocalCacheInvalidator
from atrium.storage.stores.roommember import RoomMemberStore
from atrium.storage.stores.rooms import RoomStore
from atrium.storage.stores.state import StateGroupStore
from atrium.util.caches import CacheRegistry


@attrs.frozen
class Stores:
    db: DatabasePool
    invalidator: CacheInvalidator
    rooms: RoomStore
    events: EventsStore
    state: StateGroupStore
    members: RoomMemberStore

    def register_caches(self, registry: CacheRegistry) -> None:
        """Make every cache of these stores invalidatable by name."""
        for store in (self.rooms, self.events, self.state, self.members):
            registry.register_store(store)
        registry.register(
            EVENT_CACHE_NAME,
            self.events.invalidate_event_cache,
            self.events.event_cache.invalidate_all,
        )


async def build_stores(
    db: DatabasePool,
    invalidator: CacheInvalidator,
    event_cache_size: int = 50_000,
    multi_writer_instance: str | None = None,
) -> Stores:
    """Every read store over one database (id generators read their start from it).

    ``multi_writer_instance``: this process's name when it is one of several
    events writers (see EventsStore.create).
    """
    rooms = RoomStore(db, invalidator)
    events = await EventsStore.create(db, rooms, event_cache_size, multi_writer_instance)
    state = await StateGroupStore.create(db)
    members = RoomMemberStore(db)
    return Stores(db, invalidator, rooms, events, state, members)


__all__ = [
    "CacheInvalidator",
    "EventsStore",
    "LocalCacheInvalidator",
    "RoomMemberStore",
    "RoomStore",
    "StateGroupStore",
    "Stores",
    "build_stores",
]
