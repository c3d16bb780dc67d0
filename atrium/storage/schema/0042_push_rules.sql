-- Push rules (client-server API "Push Rules"). The server-default rules are
-- not stored: they are built in code for each user; only a user's changes
-- to them (enabled, actions) are kept, in push_rule_default_overrides.

-- User-defined rules. Within (user, kind) a higher priority is more
-- important; priorities are rewritten when rules are inserted before/after
-- another.
CREATE TABLE push_rules (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    priority INTEGER NOT NULL,
    -- JSON arrays.
    conditions TEXT NOT NULL,
    actions TEXT NOT NULL,
    -- Only for content rules.
    pattern TEXT,
    enabled BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, kind, rule_id)
);

-- A user's changes to a server-default rule; NULL means "as the server defines it".
CREATE TABLE push_rule_default_overrides (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    enabled BOOLEAN,
    actions TEXT,
    PRIMARY KEY (user_id, kind, rule_id)
);
