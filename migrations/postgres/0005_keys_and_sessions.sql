-- Keys that can be listed and revoked, and dashboard sessions of their own.
--
-- Keys already have ids (api_keys.id); existing keys keep working. A key's
-- last use is written at most once a minute (Store::record_key_use).
ALTER TABLE api_keys ADD COLUMN last_used_at TIMESTAMPTZ;

-- A session stores the SHA-256 digest of its id (never the id), its user,
-- the key it was made from (revoking the key ends it) and its expiry.
CREATE TABLE sessions (
    digest     TEXT PRIMARY KEY,
    user_name  TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    key_id     BIGINT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_by_key ON sessions (key_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

-- One number that grows whenever a key is revoked or a session deleted.
CREATE TABLE credential_revision (
    id       INT PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL
);
INSERT INTO credential_revision (id, revision) VALUES (1, 0);
