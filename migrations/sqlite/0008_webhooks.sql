-- Webhooks (see the PostgreSQL migration). Instants: epoch microseconds;
-- uuids: hyphenated text; states: a JSON array as text.
CREATE TABLE webhooks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid        TEXT NOT NULL UNIQUE,
    namespace   TEXT NOT NULL,
    url         TEXT NOT NULL,
    states      TEXT NOT NULL,
    object_type TEXT,
    action      TEXT,
    secret      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    after_seq   INTEGER NOT NULL
);
CREATE INDEX webhooks_by_namespace ON webhooks (namespace, id);

CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid             TEXT NOT NULL UNIQUE,
    webhook_id       INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_seq        INTEGER NOT NULL,
    action_uuid      TEXT NOT NULL,
    state            TEXT NOT NULL,
    body             TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,
    last_status_code INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    delivered_at     INTEGER,
    UNIQUE (webhook_id, event_seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id DESC);

CREATE TABLE webhook_cursor (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO webhook_cursor (id, seq) SELECT 1, COALESCE(max(seq), 0) FROM events;
