-- Server-side key backups (client-server API "Server-side key backups",
-- key_backup.yaml). Backups are per user; versions are numbered per user
-- by the database (MAX + 1 inside the creating transaction, so any process
-- may create one) and never reused: a deleted version keeps its row with
-- `deleted` set, so deleting it again succeeds and a new backup gets a
-- higher number than every version a client may still remember.
CREATE TABLE e2e_room_keys_versions (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    -- The client's auth_data object as JSON text.
    auth_data TEXT NOT NULL,
    -- Bumped whenever the stored keys change; answered as the opaque `etag`.
    etag BIGINT NOT NULL DEFAULT 0,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, version)
);

-- One backed-up megolm session key per (user, version, room, session):
-- KeyBackupData with session_data kept as the client's JSON text.
CREATE TABLE e2e_room_keys (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count BIGINT NOT NULL,
    is_verified BOOLEAN NOT NULL,
    session_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
