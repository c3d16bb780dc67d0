-- PostgreSQL sequences for ids that several processes may allocate at once.
-- (SQLite runs one process; it allocates these ids in memory.)
CREATE SEQUENCE state_group_id_seq;
CREATE SEQUENCE events_stream_seq;
