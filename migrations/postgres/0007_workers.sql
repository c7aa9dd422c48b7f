-- Admin users, and the workers registry.
--
-- An admin may read what spans tenants (the workers list). Existing users
-- are not admins; `stevedore user grant-admin` makes one.
ALTER TABLE users ADD COLUMN admin BOOLEAN NOT NULL DEFAULT false;

-- One row per worker process, upserted when it starts and renewed by its
-- heartbeat (one UPDATE of its row); live while expires_at is in the future.
-- A graceful shutdown deletes the row; a dead worker's row is pruned.
CREATE TABLE workers (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    version      TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    concurrency  BIGINT NOT NULL,
    running      UUID[] NOT NULL DEFAULT '{}',
    heartbeat_at TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX workers_by_expiry ON workers (expires_at);
