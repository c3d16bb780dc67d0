-- Filters uploaded with POST /user/{userId}/filter (client-server API "Filtering").
-- filter_id counts up per user from 0; identical filters of one user share an ID.
CREATE TABLE user_filters (
    user_id TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    filter_json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);
CREATE INDEX user_filters_json ON user_filters (user_id, filter_json);
