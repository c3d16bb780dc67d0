-- Read receipts (client-server API "Receipts"): the latest receipt of each
-- user, per room, receipt type (m.read, m.read.private) and thread
-- (thread_id '' for an unthreaded receipt; the spec forbids an empty
-- thread_id, so '' cannot clash with a real one).
--
-- Each write takes a new stream_id of the receipts stream (see
-- account_data for why replacing the row keeps the stream readable).
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    -- JSON: what clients see under the user ({"ts": ...}).
    data TEXT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_stream ON receipts (stream_id);
CREATE INDEX receipts_room_stream ON receipts (room_id, stream_id);
