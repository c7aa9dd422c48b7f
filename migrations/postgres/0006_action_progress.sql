-- Action progress: a handler's last report (0-100, NULL before any) and its
-- message. Written by a worker's coalesced flush, fenced by the lease token,
-- at most once per `[worker] progress_interval` for all its changed actions.
-- Neither column is in an index, so these writes stay HOT like heartbeats
-- (0004).
ALTER TABLE actions
    ADD COLUMN progress         INT CHECK (progress BETWEEN 0 AND 100),
    ADD COLUMN progress_message TEXT NOT NULL DEFAULT '';
