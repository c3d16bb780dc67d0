-- Send-to-device messages (client-server API "Send-to-Device messaging").
-- Both tables draw their stream_id from the to_device stream's generator.

-- Pending messages per local device, deleted once the device's /sync
-- acknowledges them (a later `since` token at or past stream_id).
CREATE TABLE device_inbox (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    message_json TEXT NOT NULL
);
CREATE INDEX device_inbox_device_stream ON device_inbox (user_id, device_id, stream_id);
CREATE INDEX device_inbox_stream ON device_inbox (stream_id);

-- Messages for remote users, queued per destination until federation
-- sends them (messages_json maps user ID -> device ID -> content).
CREATE TABLE device_federation_outbox (
    destination TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    queued_ts BIGINT NOT NULL,
    sender TEXT NOT NULL,
    message_type TEXT NOT NULL,
    messages_json TEXT NOT NULL
);
CREATE INDEX device_federation_outbox_dest ON device_federation_outbox (destination, stream_id);
CREATE INDEX device_federation_outbox_stream ON device_federation_outbox (stream_id);

-- Transaction IDs already seen, per sending device: PUT /sendToDevice is
-- idempotent (client-server API "Transaction identifiers").
CREATE TABLE device_inbox_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);
