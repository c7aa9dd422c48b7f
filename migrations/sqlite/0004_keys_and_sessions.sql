-- Keys that can be listed and revoked, and dashboard sessions of their own
-- (see the PostgreSQL migration). Instants: epoch microseconds.
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;

CREATE TABLE sessions (
    digest     TEXT PRIMARY KEY NOT NULL,
    user_name  TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    key_id     INTEGER NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_by_key ON sessions (key_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

CREATE TABLE credential_revision (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL
);
INSERT INTO credential_revision (id, revision) VALUES (1, 0);
