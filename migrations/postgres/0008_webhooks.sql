-- Webhooks: per namespace, a URL called when actions reach chosen states.
--
-- The secret is a shared signing key (the sender needs it in clear to sign),
-- not a password. after_seq: the last event stored when the webhook was
-- created; only later events are delivered to it.
CREATE TABLE webhooks (
    id          BIGSERIAL PRIMARY KEY,
    uuid        UUID NOT NULL UNIQUE,
    namespace   TEXT NOT NULL,
    url         TEXT NOT NULL,
    states      JSONB NOT NULL,
    object_type TEXT,
    action      TEXT,
    secret      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    after_seq   BIGINT NOT NULL
);
CREATE INDEX webhooks_by_namespace ON webhooks (namespace, id);

-- One row per (webhook, event): the truth of a delivery. A pending row is
-- due at next_attempt_at; a claim pushes next_attempt_at one lease ahead
-- and counts the attempt, so a sender that dies leaves the row due again.
CREATE TABLE webhook_deliveries (
    id               BIGSERIAL PRIMARY KEY,
    uuid             UUID NOT NULL UNIQUE,
    webhook_id       BIGINT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_seq        BIGINT NOT NULL,
    action_uuid      UUID NOT NULL,
    state            TEXT NOT NULL,
    body             TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INT NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ,
    last_status_code INT,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at     TIMESTAMPTZ,
    UNIQUE (webhook_id, event_seq)
);
-- The sender's sweep: only pending rows.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
-- The delivery log, newest first.
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id DESC);

-- The relay's cursor over the events: those up to seq were matched. It
-- starts at the events already stored (they predate every webhook).
CREATE TABLE webhook_cursor (
    id  INT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO webhook_cursor (id, seq) SELECT 1, COALESCE(max(seq), 0) FROM events;
