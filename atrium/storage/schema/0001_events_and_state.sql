-- Rooms, events, the room DAG, state groups, current state and memberships.
-- One text for SQLite and PostgreSQL: BOOLEAN, BIGINT and TEXT mean the same
-- on both for our purposes.

CREATE TABLE rooms (
    room_id TEXT NOT NULL PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT,
    is_public BOOLEAN NOT NULL DEFAULT FALSE
);

-- Every event we hold, timeline or outlier. stream_ordering is the position
-- in the events stream; topological_ordering is the event's depth.
CREATE TABLE events (
    stream_ordering BIGINT NOT NULL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    topological_ordering BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    received_ts BIGINT NOT NULL,
    -- The wire format the event was stored with (1, 2 or 3); it is used to
    -- load the event, never re-derived from the room version.
    format_version INTEGER NOT NULL,
    outlier BOOLEAN NOT NULL,
    soft_failed BOOLEAN NOT NULL DEFAULT FALSE,
    rejection_reason TEXT,
    redacts TEXT,
    instance_name TEXT NOT NULL
);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX events_room_topological ON events (room_id, topological_ordering, stream_ordering);

CREATE TABLE event_json (
    event_id TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    internal_metadata TEXT NOT NULL,
    json TEXT NOT NULL
);

-- prev_events of each event: the room DAG.
CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);
CREATE INDEX event_edges_prev ON event_edges (prev_event_id);

-- auth_events of each event; walking it gives auth chains.
CREATE TABLE event_auth (
    event_id TEXT NOT NULL,
    auth_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_id)
);

CREATE TABLE event_forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- prev_events we reference but do not hold: where backfill starts.
CREATE TABLE event_backward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

CREATE TABLE state_events (
    event_id TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL
);

CREATE TABLE redactions (
    event_id TEXT NOT NULL PRIMARY KEY,
    redacts TEXT NOT NULL,
    received_ts BIGINT NOT NULL
);
CREATE INDEX redactions_redacts ON redactions (redacts);

-- State groups: the state of the room at some point, stored as a delta
-- against one parent group (state_group_edges) or in full.
CREATE TABLE state_groups (
    id BIGINT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL
);

CREATE TABLE state_group_edges (
    state_group BIGINT NOT NULL PRIMARY KEY,
    prev_state_group BIGINT NOT NULL
);
CREATE INDEX state_group_edges_prev ON state_group_edges (prev_state_group);

CREATE TABLE state_groups_state (
    state_group BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL
);
CREATE INDEX state_groups_state_group ON state_groups_state (state_group, type, state_key);

-- The state group of the room's state AFTER each (non-outlier) event.
CREATE TABLE event_to_state_groups (
    event_id TEXT NOT NULL PRIMARY KEY,
    state_group BIGINT NOT NULL
);
CREATE INDEX event_to_state_groups_group ON event_to_state_groups (state_group);

CREATE TABLE current_state_events (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    membership TEXT,
    PRIMARY KEY (room_id, type, state_key)
);

-- Changes to current state, in stream order, for replication and /sync.
-- event_id NULL means the state entry was removed.
CREATE TABLE current_state_delta_stream (
    stream_id BIGINT NOT NULL,
    instance_name TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT,
    prev_event_id TEXT
);
CREATE INDEX current_state_delta_stream_id ON current_state_delta_stream (stream_id);

-- Every m.room.member event, as rows that are cheap to query.
CREATE TABLE room_memberships (
    event_id TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    room_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    display_name TEXT,
    avatar_url TEXT,
    event_stream_ordering BIGINT NOT NULL
);
CREATE INDEX room_memberships_user_room ON room_memberships (user_id, room_id);
CREATE INDEX room_memberships_room ON room_memberships (room_id);

-- The latest membership of each LOCAL user in each room they were ever in.
-- Kept after this server leaves a room and its current state is cleaned
-- up, so /sync can still report the leave and history stays reachable.
CREATE TABLE local_current_membership (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
CREATE INDEX local_current_membership_room ON local_current_membership (room_id);

-- Client transaction IDs of locally sent events, for idempotent PUT /send.
CREATE TABLE event_txn_id (
    event_id TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    inserted_ts BIGINT NOT NULL
);
CREATE UNIQUE INDEX event_txn_id_txn ON event_txn_id (room_id, user_id, device_id, txn_id);

-- The position each writer instance has persisted up to, per stream.
CREATE TABLE stream_positions (
    stream_name TEXT NOT NULL,
    instance_name TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (stream_name, instance_name)
);
