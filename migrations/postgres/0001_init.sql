-- Stevedore schema, PostgreSQL.
--
-- Access paths are chosen so that every write by uuid goes through a primary
-- key, and every other index is partial: it covers only the few rows a sweep
-- or a per-object check looks at (active actions, live leases, unsent outbox
-- rows), so it stays small and the planner never prefers it to the key.

CREATE TABLE users (
    name       TEXT PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A user's namespaces, in order: position 0 is their own.
CREATE TABLE memberships (
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    namespace TEXT NOT NULL,
    position  INT  NOT NULL,
    PRIMARY KEY (user_name, namespace)
);

CREATE TABLE api_keys (
    id         BIGSERIAL PRIMARY KEY,
    user_name  TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    key_digest TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_by_user ON api_keys (user_name);

CREATE TABLE objects (
    uuid         UUID PRIMARY KEY,
    namespace    TEXT NOT NULL,
    object_type  TEXT NOT NULL,
    resource_uri TEXT NOT NULL,
    name         TEXT NOT NULL,
    state        TEXT NOT NULL,
    parents      JSONB NOT NULL DEFAULT '[]',
    attributes   JSONB NOT NULL DEFAULT '{}',
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    deleted_at   TIMESTAMPTZ
);
CREATE INDEX objects_by_namespace ON objects (namespace, object_type, created_at);

-- Actions reference their object by uuid without a foreign key: an action may
-- be recorded for an object this database does not hold (yet, or any more).
CREATE TABLE actions (
    id               BIGSERIAL NOT NULL UNIQUE, -- insertion order, for newest-first listings
    uuid             UUID PRIMARY KEY,
    namespace        TEXT NOT NULL,
    action           TEXT NOT NULL,
    object           TEXT NOT NULL,
    object_uuid      UUID NOT NULL,
    object_type      TEXT NOT NULL,
    object_parents   JSONB NOT NULL DEFAULT '[]', -- for the action's events
    verb             TEXT NOT NULL,
    method           TEXT NOT NULL,
    path             TEXT NOT NULL,
    body             TEXT NOT NULL,
    ip               TEXT NOT NULL,
    location         TEXT NOT NULL,
    user_name        TEXT NOT NULL,
    user_agent       TEXT NOT NULL,
    is_user_action   BOOLEAN NOT NULL,
    state            TEXT NOT NULL CHECK (state IN
                         ('Pending', 'In progress', 'Canceling', 'Canceled', 'Success', 'Failed')),
    start_date       TIMESTAMPTZ,
    end_date         TIMESTAMPTZ,
    retry_of         UUID,
    claims           INT NOT NULL DEFAULT 0,
    lease_token      UUID,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    dispatched_at    TIMESTAMPTZ,
    log_seq          BIGINT NOT NULL DEFAULT 0 -- last log line number handed out
);
-- The per-object check of submit and promotion. The predicate must stay equal
-- to the states the stores inline in those queries (Pending + holds_object()).
CREATE INDEX actions_active_by_object ON actions (object_uuid, id)
    WHERE state IN ('Pending', 'In progress', 'Canceling');
-- The reaper's sweep.
CREATE INDEX actions_leased_by_expiry ON actions (lease_expires_at)
    WHERE lease_expires_at IS NOT NULL;
-- The redispatch sweep: dispatched, never claimed.
CREATE INDEX actions_unclaimed_by_dispatch ON actions (dispatched_at)
    WHERE state = 'In progress' AND lease_token IS NULL;
-- Listings per tenant, newest first.
CREATE INDEX actions_by_namespace ON actions (namespace, id DESC);

CREATE TABLE action_logs (
    action_uuid UUID   NOT NULL REFERENCES actions (uuid) ON DELETE CASCADE,
    seq         BIGINT NOT NULL,
    log         TEXT   NOT NULL,
    ts          BIGINT NOT NULL, -- epoch seconds
    stream      TEXT   NOT NULL,
    PRIMARY KEY (action_uuid, seq)
);

CREATE TABLE events (
    seq          BIGSERIAL PRIMARY KEY,
    namespace    TEXT NOT NULL,
    object_type  TEXT NOT NULL,
    kind         TEXT NOT NULL,
    uuid         TEXT NOT NULL,
    resource_uri TEXT NOT NULL,
    state        TEXT NOT NULL,
    parents      JSONB NOT NULL DEFAULT '[]',
    datetime     TIMESTAMPTZ NOT NULL
);
CREATE INDEX events_by_namespace ON events (namespace, seq);

CREATE TABLE outbox (
    id          BIGSERIAL PRIMARY KEY,
    action_uuid UUID NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at     TIMESTAMPTZ
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
