-- Device-list changes: the device_lists stream. All three tables take their
-- stream_id from one generator, which starts past the maximum of all of them.

-- One row per change of a user's devices (or cross-signing keys).
CREATE TABLE device_lists_stream (
    stream_id BIGINT NOT NULL,
    user_id TEXT NOT NULL
);
CREATE INDEX device_lists_stream_id ON device_lists_stream (stream_id);
CREATE INDEX device_lists_stream_user ON device_lists_stream (user_id, stream_id);

-- For federation: one row per remote server to tell about a local user's
-- device change (m.device_list_update), `sent` once delivered.
CREATE TABLE device_lists_outbound_pokes (
    destination TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sent BOOLEAN NOT NULL DEFAULT FALSE,
    ts BIGINT NOT NULL
);
CREATE INDEX device_lists_outbound_pokes_id ON device_lists_outbound_pokes (stream_id);
CREATE INDEX device_lists_outbound_pokes_dest ON device_lists_outbound_pokes (destination, stream_id);

-- A user signed other users' keys with their user-signing key: only the
-- signer's own devices need to re-query those users.
CREATE TABLE user_signature_stream (
    stream_id BIGINT NOT NULL,
    from_user_id TEXT NOT NULL,
    user_ids TEXT NOT NULL
);
CREATE INDEX user_signature_stream_id ON user_signature_stream (stream_id);
