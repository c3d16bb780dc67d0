-- End-to-end encryption keys of local devices, and cross-signing keys.
-- Key objects are stored as the client's JSON text: the server never
-- re-encodes a signed object, so its signatures stay checkable.

-- One identity-key object per device (POST /keys/upload `device_keys`).
CREATE TABLE e2e_device_keys_json (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    ts_added_ms BIGINT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Unclaimed one-time keys; a claim deletes the row it hands out.
CREATE TABLE e2e_one_time_keys_json (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    ts_added_ms BIGINT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

-- At most one fallback key per device and algorithm; `used` is set when a
-- claim had to hand it out (reported by /sync until the device replaces it).
CREATE TABLE e2e_fallback_keys_json (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- The latest master / self_signing / user_signing key of each user.
CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    keytype TEXT NOT NULL,
    key_json TEXT NOT NULL,
    ts_added_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, keytype)
);

-- Signatures uploaded with POST /keys/signatures/upload: `signer_user_id`'s
-- key `key_id` signed the device (or cross-signing key, named by its public
-- key) `target_device_id` of `target_user_id`.
CREATE TABLE e2e_cross_signing_signatures (
    signer_user_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    target_user_id TEXT NOT NULL,
    target_device_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (signer_user_id, key_id, target_user_id, target_device_id)
);
CREATE INDEX e2e_cross_signing_signatures_target
    ON e2e_cross_signing_signatures (target_user_id, target_device_id);
