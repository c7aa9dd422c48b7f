-- A submission batch in one statement, so in one round trip with its commit.
--
-- Recording a batch took seven round trips (begin, the object locks, the
-- busy check, the insert, the bookkeeping, commit), each a wakeup of both
-- sides. As one call outside an explicit transaction the statement is its
-- own transaction: all of it commits, or none of it.
--
-- The rules stay in the store's code. For each action the caller passes
-- both outcomes, "takes its object" (p_free_*) and "waits" (p_busy_*): the
-- state and the system log entry's level and message; an action that
-- takes its object is dispatched (an outbox row). This function decides
-- only which one applies, from the object locks and the active actions,
-- as the store's busy check did: an action takes its object when it is
-- the first of the batch on that object and no active action holds it; a
-- completed action (p_completed) never does. Each plpgsql statement takes
-- a new snapshot, so the busy check sees every action committed before
-- the locks were granted. The lock order is the store's: object locks,
-- then (implicitly) the new rows, and the events lock last.
--
-- The busy check's state list must stay equal to the predicate of
-- actions_active_by_object (rows::active_states); a test compares them.
CREATE FUNCTION stevedore_submit_batch(
    p_uuid uuid[], p_namespace text[], p_action text[], p_object text[],
    p_object_uuid uuid[], p_object_type text[], p_object_parents text[],
    p_verb text[], p_method text[], p_path text[], p_body text[], p_ip text[],
    p_location text[], p_user text[], p_user_agent text[],
    p_is_user_action boolean[], p_retry_of uuid[], p_completed boolean[],
    -- the object locks to take, in the order to take them (one global order)
    p_lock_keys bigint[],
    p_free_state text[], p_busy_state text[],
    p_free_level text[], p_busy_level text[],
    p_free_message text[], p_busy_message text[],
    p_log_category text[],
    p_event_object_type text[], p_event_kind text[], p_event_uri text[],
    p_event_parents text[],
    p_events_lock_a integer, p_events_lock_b integer)
RETURNS TABLE (r_action actions, r_seq bigint, r_datetime timestamptz, r_outbox_id bigint)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_key bigint;
    v_free boolean[];
    v_actions actions[];
    v_outbox bigint[];
BEGIN
    FOREACH v_key IN ARRAY p_lock_keys LOOP
        PERFORM pg_advisory_xact_lock(v_key);
    END LOOP;

    -- One index probe per action (LATERAL with LIMIT): as an EXISTS the
    -- planner may hash the whole index of active actions instead.
    SELECT array_agg(f.takes ORDER BY f.i) INTO v_free
    FROM (SELECT b.i,
                 NOT b.done
                 AND row_number() OVER (PARTITION BY b.o, b.done ORDER BY b.i) = 1
                 AND h.held IS NULL AS takes
          FROM unnest(p_object_uuid, p_completed) WITH ORDINALITY AS b(o, done, i)
          LEFT JOIN LATERAL (SELECT true AS held FROM actions AS a
                             WHERE a.object_uuid = b.o
                               AND a.state IN ('Pending', 'In progress', 'Canceling')
                             LIMIT 1) AS h ON true) AS f;

    -- The actions, their system log entries and outbox rows.
    WITH batch AS MATERIALIZED (
        SELECT t.*, v_free[t.i] AS takes
        FROM unnest(p_uuid, p_namespace, p_action, p_object, p_object_uuid, p_object_type,
                    p_object_parents, p_verb, p_method, p_path, p_body, p_ip, p_location,
                    p_user, p_user_agent, p_is_user_action, p_retry_of, p_completed,
                    p_free_state, p_busy_state, p_free_level, p_busy_level,
                    p_free_message, p_busy_message, p_log_category)
             WITH ORDINALITY AS t(u, ns, act, obj, ou, ot, op, verb, meth, path, body, ip, loc,
                                  un, ua, iu, retry, done, fs, bs, fl, bl, fm, bm, lc, i)
    ),
    inserted AS (
        INSERT INTO actions (uuid, namespace, action, object, object_uuid, object_type,
                             object_parents, verb, method, path, body, ip, location, user_name,
                             user_agent, is_user_action, state, retry_of, start_date, end_date,
                             dispatched_at)
        SELECT u, ns, act, obj, ou, ot, op::jsonb, verb, meth, path, body, ip, loc, un, ua, iu,
               CASE WHEN takes THEN fs ELSE bs END, retry, now(),
               CASE WHEN done THEN now() END, CASE WHEN takes THEN now() END
        FROM batch ORDER BY i
        RETURNING *
    ),
    logs AS (
        INSERT INTO system_log (namespace, category, level, user_name, message)
        SELECT ns, lc, CASE WHEN takes THEN fl ELSE bl END, un,
               CASE WHEN takes THEN fm ELSE bm END
        FROM batch ORDER BY i
    ),
    queued AS (
        INSERT INTO outbox (action_uuid)
        SELECT u FROM batch WHERE takes ORDER BY i
        RETURNING id, action_uuid
    )
    SELECT array_agg(ROW(a.*)::actions ORDER BY b.i), array_agg(q.id ORDER BY b.i)
      INTO v_actions, v_outbox
    FROM batch AS b
    JOIN inserted AS a ON a.uuid = b.u
    LEFT JOIN queued AS q ON q.action_uuid = b.u;

    -- The events last: they draw their seqs in the batch's order only once
    -- the events lock is held (to the commit), as the store's
    -- record_changes does, so the lock is held for these inserts only.
    PERFORM pg_advisory_xact_lock(p_events_lock_a, p_events_lock_b);
    RETURN QUERY
    WITH stored AS (
        INSERT INTO events (namespace, object_type, kind, uuid, resource_uri, state, parents, datetime)
        SELECT ns, eot, ek, u::text, eu, (v_actions[i]).state, ep::jsonb, now()
        FROM unnest(p_uuid, p_namespace, p_event_object_type, p_event_kind, p_event_uri,
                    p_event_parents)
             WITH ORDINALITY AS e(u, ns, eot, ek, eu, ep, i)
        ORDER BY i
        RETURNING seq, uuid, datetime
    )
    SELECT v_actions[r.i], s.seq, s.datetime, v_outbox[r.i]
    FROM generate_subscripts(v_actions, 1) AS r(i)
    JOIN stored AS s ON s.uuid = (v_actions[r.i]).uuid::text
    ORDER BY r.i;
END
$$;
