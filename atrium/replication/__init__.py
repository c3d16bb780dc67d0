"""Replication: streams of typed rows that every process applies in order.

A writer that changes a stream calls ``StreamPublisher.publish``; the same
``ReplicationDataHandler`` applies rows arriving from other processes over the
bus (in-process in the embedded default, Redis when split). For each batch of
rows: 1) invalidate caches named by the rows, 2) advance the stream position,
3) wake the notifier. That order is the contract /sync relies on.

Where things live:
- ``streams/``: one module per stream (``caches.py`` also holds the
  ``ReplicatingCacheInvalidator`` that turns invalidations into rows);
- ``handler.py`` / ``publisher.py``: applying rows; announcing local updates;
- ``commands.py``: the one-line commands (RDATA, POSITION, REPLICATE, ...);
- ``bus.py`` (``InProcessBus``) and ``redis.py`` (``RedisBus``): transports;
- ``command_handler.py``: ordering, batching, gap detection and catch-up;
- ``client.py`` / ``http.py``: fetching rows and calling other processes over
  the authenticated HTTP replication endpoints, and serving them;
- ``service.py``: joining a HomeServer to the bus (used by the composition root).
"""
