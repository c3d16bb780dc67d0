-- Room reads: GET /rooms/{roomId}/timestamp_to_event looks events up by
-- their origin_server_ts within one room.
CREATE INDEX events_room_origin_ts ON events (room_id, origin_server_ts);
