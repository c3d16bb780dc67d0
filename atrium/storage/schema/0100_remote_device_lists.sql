-- Device lists of remote users who share a room with one of our users
-- (client-server API "Tracking the device list for a user", server-server API
-- "Device Management"): fetched with /user/devices on the first key query,
-- kept current with m.device_list_update / m.signing_key_update EDUs, and
-- served to local /keys/query without asking the owning server again.

-- One row per remote user we track. `stream_id` is the owning server's
-- device-list stream_id the cache is at (EDUs naming an unknown prev_id mean
-- a gap: the whole list is fetched again). `stale` is set when we stop
-- sharing a room with the user (updates no longer reach us): the cache is
-- not served and is fetched again the next time it is needed.
CREATE TABLE device_lists_remote_users (
    user_id TEXT NOT NULL PRIMARY KEY,
    stream_id BIGINT NOT NULL,
    stale BOOLEAN NOT NULL DEFAULT FALSE,
    master_key TEXT,
    self_signing_key TEXT,
    ts BIGINT NOT NULL
);

-- One row per device of a tracked remote user: the device's signed keys (as
-- the owning server gave them, JSON, or NULL before keys were uploaded) and
-- its display name.
CREATE TABLE device_lists_remote_cache (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    keys_json TEXT,
    display_name TEXT,
    PRIMARY KEY (user_id, device_id)
);
