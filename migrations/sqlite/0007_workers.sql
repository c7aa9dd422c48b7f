-- Admin users, and the workers registry (see the PostgreSQL migration).
-- Instants: epoch microseconds; running: a JSON array of action uuids.
ALTER TABLE users ADD COLUMN admin INTEGER NOT NULL DEFAULT 0;

CREATE TABLE workers (
    id           TEXT PRIMARY KEY NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    version      TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    concurrency  INTEGER NOT NULL,
    running      TEXT NOT NULL DEFAULT '[]',
    heartbeat_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX workers_by_expiry ON workers (expires_at);
