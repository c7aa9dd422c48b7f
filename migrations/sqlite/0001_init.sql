-- Stevedore schema, SQLite (the `stevedore dev` store).
--
-- Same tables as the PostgreSQL schema, with SQLite types: uuids are
-- lowercase hyphenated TEXT, instants are INTEGER microseconds since the Unix
-- epoch (compared as numbers, never as strings), JSON is TEXT.
--
-- Tables with a sequence (`actions`, `events`, `outbox`, `api_keys`) use an
-- INTEGER PRIMARY KEY AUTOINCREMENT, which is the rowid: numbers only grow and
-- are never reused. For `actions` the uuid is then a UNIQUE key; in SQLite a
-- non-integer PRIMARY KEY is exactly such a unique index, so `WHERE uuid = ?`
-- has the same access path either way.

CREATE TABLE users (
    name       TEXT PRIMARY KEY NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE memberships (
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    namespace TEXT NOT NULL,
    position  INTEGER NOT NULL,
    PRIMARY KEY (user_name, namespace)
);

CREATE TABLE api_keys (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_name  TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    key_digest TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE INDEX api_keys_by_user ON api_keys (user_name);

CREATE TABLE objects (
    uuid         TEXT PRIMARY KEY NOT NULL,
    namespace    TEXT NOT NULL,
    object_type  TEXT NOT NULL,
    resource_uri TEXT NOT NULL,
    name         TEXT NOT NULL,
    state        TEXT NOT NULL,
    parents      TEXT NOT NULL DEFAULT '[]',
    attributes   TEXT NOT NULL DEFAULT '{}',
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    deleted_at   INTEGER
);
CREATE INDEX objects_by_namespace ON objects (namespace, object_type, created_at);

-- No foreign key to objects: see the PostgreSQL schema.
CREATE TABLE actions (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid             TEXT NOT NULL UNIQUE,
    namespace        TEXT NOT NULL,
    action           TEXT NOT NULL,
    object           TEXT NOT NULL,
    object_uuid      TEXT NOT NULL,
    object_type      TEXT NOT NULL,
    object_parents   TEXT NOT NULL DEFAULT '[]',
    verb             TEXT NOT NULL,
    method           TEXT NOT NULL,
    path             TEXT NOT NULL,
    body             TEXT NOT NULL,
    ip               TEXT NOT NULL,
    location         TEXT NOT NULL,
    user_name        TEXT NOT NULL,
    user_agent       TEXT NOT NULL,
    is_user_action   INTEGER NOT NULL,
    state            TEXT NOT NULL CHECK (state IN
                         ('Pending', 'In progress', 'Canceling', 'Canceled', 'Success', 'Failed')),
    start_date       INTEGER,
    end_date         INTEGER,
    retry_of         TEXT,
    claims           INTEGER NOT NULL DEFAULT 0,
    lease_token      TEXT,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    dispatched_at    INTEGER,
    log_seq          INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX actions_active_by_object ON actions (object_uuid, id)
    WHERE state IN ('Pending', 'In progress', 'Canceling');
CREATE INDEX actions_leased_by_expiry ON actions (lease_expires_at)
    WHERE lease_expires_at IS NOT NULL;
CREATE INDEX actions_unclaimed_by_dispatch ON actions (dispatched_at)
    WHERE state = 'In progress' AND lease_token IS NULL;
CREATE INDEX actions_by_namespace ON actions (namespace, id DESC);

CREATE TABLE action_logs (
    action_uuid TEXT NOT NULL REFERENCES actions (uuid) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    log         TEXT NOT NULL,
    ts          INTEGER NOT NULL,
    stream      TEXT NOT NULL,
    PRIMARY KEY (action_uuid, seq)
) WITHOUT ROWID;

CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace    TEXT NOT NULL,
    object_type  TEXT NOT NULL,
    kind         TEXT NOT NULL,
    uuid         TEXT NOT NULL,
    resource_uri TEXT NOT NULL,
    state        TEXT NOT NULL,
    parents      TEXT NOT NULL DEFAULT '[]',
    datetime     INTEGER NOT NULL
);
CREATE INDEX events_by_namespace ON events (namespace, seq);

CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    action_uuid TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    sent_at     INTEGER
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
