-- Pushers (client-server API "Push notifications", pusher.yaml): where a
-- user's devices want notifications sent. Stored, listed and replaced as
-- the spec says; Atrium does not call push gateways yet (docs/client-api.md).
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    -- At most 512 bytes (spec), so it can be part of the key.
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    -- The client's `data` object as JSON text.
    data TEXT NOT NULL,
    ts_added_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
-- `append: false` removes other users' pushers with the same app and pushkey.
CREATE INDEX pushers_app_pushkey ON pushers (app_id, pushkey);
