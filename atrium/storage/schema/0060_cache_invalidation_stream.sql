-- The caches replication stream: one row per cache invalidation a process
-- made after a write, so other processes can replay the ones they missed
-- (atrium/replication/streams/caches.py). Every process may write rows, each
-- in its own id space: a row is identified by (instance_name, stream_id).
CREATE TABLE cache_invalidation_stream (
    instance_name TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    cache_name TEXT NOT NULL,
    -- JSON list of keys (each a list of the cached method's arguments);
    -- NULL invalidates the whole cache.
    cache_keys TEXT,
    invalidation_ts BIGINT NOT NULL,
    PRIMARY KEY (instance_name, stream_id)
);
CREATE INDEX cache_invalidation_stream_ts ON cache_invalidation_stream (invalidation_ts);
