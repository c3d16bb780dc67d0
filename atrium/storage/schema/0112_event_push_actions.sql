-- Push actions (client-server API "Push Notifications"): for each new room
-- event, the actions of the push rule that matched, per local user, when
-- they notify or highlight. Written by the events writer in the same
-- transaction as the event, so a /sync that sees the event sees its counts.
-- Unread counts are the rows after the user's latest read receipt.
CREATE TABLE event_push_actions (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    -- JSON list: the matching rule's actions (notify, set_tweak ...).
    actions TEXT NOT NULL,
    notif BOOLEAN NOT NULL,
    highlight BOOLEAN NOT NULL,
    -- One event per stream ordering. Also serves /notifications pages and
    -- the HTTP pusher (a user's actions in stream order).
    PRIMARY KEY (user_id, stream_ordering)
);
-- Counts per room after a receipt. Only two B-trees: a message in a room
-- with N local members writes N rows, so every index costs N insertions.
CREATE INDEX event_push_actions_user_room ON event_push_actions (user_id, room_id, stream_ordering);
-- How far each pusher has sent, and its failure back-off state.
ALTER TABLE pushers ADD COLUMN last_stream_ordering BIGINT;
ALTER TABLE pushers ADD COLUMN failing_since_ms BIGINT;
