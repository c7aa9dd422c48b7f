-- Action progress: a handler's last report (0-100, NULL before any) and its
-- message. Written by a worker's coalesced flush, fenced by the lease token,
-- at most once per `[worker] progress_interval` for all its changed actions.
ALTER TABLE actions ADD COLUMN progress INTEGER CHECK (progress BETWEEN 0 AND 100);
ALTER TABLE actions ADD COLUMN progress_message TEXT NOT NULL DEFAULT '';
