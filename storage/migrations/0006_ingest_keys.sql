-- Keys of the ingest gateways (issue #11): who may publish which event types from which
-- sources. Only the SHA-256 of a secret is stored (ingest/keys.py says why that hash); a
-- revoked key keeps its row (when, and what it was allowed) but can never be used again,
-- and its name is free for a new key.
CREATE TABLE ingest_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL,
    secret_hash bytea       NOT NULL,
    types       text[]      NOT NULL,
    sources     text[]      NOT NULL,
    -- The same secret as Mosquitto's password file wants it (mosquitto_passwd, PBKDF2-
    -- SHA512): the key's MQTT account `name`, which `ioc services up` and the keys commands
    -- write into it. NULL: no MQTT account (mosquitto_passwd was not available).
    mqtt_hash   text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
-- One active key per name (the name is its MQTT account), and no two active keys share a
-- secret (the gateway finds a key by its secret's hash).
CREATE UNIQUE INDEX ingest_keys_active_name ON ingest_keys (name) WHERE revoked_at IS NULL;
CREATE UNIQUE INDEX ingest_keys_active_hash ON ingest_keys (secret_hash) WHERE revoked_at IS NULL;
