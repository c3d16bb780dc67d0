-- Crash-safe outbound federation (docs/federation.md, "Outbound"): what the
-- federation sender has handled and sent survives a restart, so events a
-- destination missed are sent again (catch-up) instead of being lost.

-- How far each federation sender instance has handled the events stream of
-- each events writer (one row per writer: the position is a vector when
-- there are several writers). On start the sender resumes from here.
CREATE TABLE federation_stream_positions (
    sender_instance TEXT NOT NULL,
    writer_instance TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (sender_instance, writer_instance)
);

-- Per destination and room: the stream ordering of the latest event queued
-- for the destination, and of the latest one it accepted (a 200 to /send).
-- Positions are kept per room because one room's events come from one
-- writer, in order, while events of different rooms (different writers) do
-- not reach the sender in stream order. A room with queued > sent (or sent
-- NULL) is behind: catch-up sends what it missed.
CREATE TABLE federation_destination_rooms (
    destination TEXT NOT NULL,
    room_id TEXT NOT NULL,
    queued_stream_ordering BIGINT NOT NULL,
    sent_stream_ordering BIGINT,
    PRIMARY KEY (destination, room_id)
);
