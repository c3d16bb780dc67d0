-- Presence (client-server API "Presence"): the latest state of each local
-- user. Each change takes a new stream_id of the presence stream.
CREATE TABLE presence (
    user_id TEXT NOT NULL PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL,
    stream_id BIGINT NOT NULL
);
CREATE INDEX presence_stream ON presence (stream_id);
