-- The QNAP-style system log: action state changes, object changes,
-- authentication failures, administrative commands.
CREATE TABLE system_log (
    id         BIGSERIAL PRIMARY KEY,
    ts         TIMESTAMPTZ NOT NULL DEFAULT now(),
    namespace  TEXT,
    category   TEXT NOT NULL,
    level      TEXT NOT NULL,
    user_name  TEXT NOT NULL,
    message    TEXT NOT NULL
);
CREATE INDEX system_log_by_namespace ON system_log (namespace, id DESC);
CREATE INDEX system_log_by_ts ON system_log (ts);
