-- Account data (client-server API "Client Config"): per user, global
-- (room_id = '') or for one room. Room tags are the room account data type
-- m.tag; push rule changes leave an m.push_rules row (content '{}') whose
-- real content is computed from the push_rules tables when read.
--
-- One row per (user, room, type). Every write takes a new stream_id of the
-- account_data stream, so "changed since position P" is stream_id > P, and
-- the highest allocated id is always present for the id generator to start
-- from after a restart.
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    account_data_type TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id, account_data_type)
);
CREATE INDEX account_data_stream ON account_data (stream_id);
CREATE INDEX account_data_user_stream ON account_data (user_id, stream_id);
