-- Federation (docs/federation.md): remote server keys, received
-- transactions, and the outbound retry state of each destination.

-- The latest key response of each server (as fetched directly or through a
-- notary), kept so we can serve it as a notary and recheck it later.
CREATE TABLE server_key_responses (
    server_name TEXT NOT NULL PRIMARY KEY,
    from_server TEXT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    response_json TEXT NOT NULL
);

-- Every verify key we have seen for a server. valid_until_ts is the lesser
-- of the response's valid_until_ts and fetch time + 7 days (server-server
-- API, keys `valid_until_ts`); expired_ts is set for old_verify_keys, which
-- are only valid for events sent before it.
CREATE TABLE server_verify_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    fetched_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

-- Inbound transactions already processed, with our answer: a sender that
-- retries a transaction gets the same answer and nothing is applied twice.
CREATE TABLE federation_received_transactions (
    origin TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    response_code INTEGER NOT NULL,
    response_json TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, transaction_id)
);
CREATE INDEX federation_received_transactions_ts ON federation_received_transactions (received_ts);

-- Outbound back-off per destination: while retry_last_ts + retry_interval
-- is in the future we do not try to send to it.
CREATE TABLE federation_destinations (
    destination TEXT NOT NULL PRIMARY KEY,
    retry_last_ts BIGINT NOT NULL,
    retry_interval BIGINT NOT NULL
);
