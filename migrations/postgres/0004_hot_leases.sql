-- Claims and heartbeats write only the lease columns of an action. An
-- UPDATE is HOT (no new index entries, the new row version on the same
-- page) only when it changes no column that an index uses as a key or in
-- its predicate, and when the page has room. So:
--
-- * the two sweeps that indexed lease columns (the reaper's, by lease
--   expiry, and the redispatch sweep's, unclaimed by dispatch time) now scan
--   one partial index of the running actions and filter on the lease
--   columns: the running actions are few (at most one per object, and what
--   waits in the queue);
-- * new pages keep half their room free for those row versions (an action
--   row is about 500 bytes; at 80 most claims still found no room).
--
-- Before: a claim wrote 8 index entries, a heartbeat as many.
DROP INDEX actions_leased_by_expiry;
DROP INDEX actions_unclaimed_by_dispatch;
-- The predicate must stay equal to the states the stores inline in the
-- sweeps (rows::claimable_states: In progress, Canceling).
CREATE INDEX actions_running ON actions (id) WHERE state IN ('In progress', 'Canceling');
ALTER TABLE actions SET (fillfactor = 50);
