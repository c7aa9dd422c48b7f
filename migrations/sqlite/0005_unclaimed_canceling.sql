-- The redispatch sweep covers Canceling actions too (a cancelled action whose
-- job message was lost is claimed again and finished as Canceled), so its
-- index covers both states. The predicate must stay equal, term for term, to
-- the one the store inlines (rows::claimable_states): SQLite uses a partial
-- index only then.
DROP INDEX actions_unclaimed_by_dispatch;
CREATE INDEX actions_unclaimed_by_dispatch ON actions (dispatched_at)
    WHERE state IN ('In progress', 'Canceling') AND lease_token IS NULL;
