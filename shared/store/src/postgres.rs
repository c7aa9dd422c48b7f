//! The PostgreSQL store: the production backend.
//!
//! # Concurrency
//!
//! Transactions run at READ COMMITTED. Three kinds of lock keep the store's
//! promises, always taken in this order, so two transactions never wait on
//! each other in a cycle:
//!
//! 1. **The object lock**, `pg_advisory_xact_lock(<key of the object uuid>)`,
//!    taken by every transaction that decides whether an object is busy
//!    (`submit_action`) or changes the state of one of its actions
//!    (`transition`, `reap_expired_leases`). A row lock cannot do this job: the
//!    action that must be waited for may not exist yet (two first submissions
//!    race), and objects need not have a row in `objects` at all. An advisory
//!    lock needs no row, costs no write, and is released at commit. Because each
//!    check runs as a new statement after the lock is granted, it sees every
//!    transaction that held the lock before, so at most one action per object
//!    is ever In progress, and a Pending action is never left behind by a
//!    finish that committed just before it.
//! 2. **Action row locks**, taken by the guarded `UPDATE`s.
//! 3. **The events lock**, a single advisory lock taken by the statement that
//!    inserts an event, held to commit. It makes the order of `events.seq` the
//!    order of commits: without it a transaction could draw seq 5, commit after
//!    another drew and committed seq 6, and a client polling `seq > 5`… would
//!    never see it. Events are therefore inserted last in every transaction,
//!    after every row lock is held and after the batch's other rows (system
//!    log entries, outbox rows), which keeps the lock's hold time to the
//!    events' inserts and the commit.
//!
//! Batches (`submit_actions`, `transition_many`) take all their object locks
//! up front in uuid order, and `transition_many` then its actions' row locks
//! (also in uuid order), so each batch still takes the events lock after the
//! locks it needs. A promoted Pending action's row is locked later, under its
//! object's lock, which every writer of a Pending action holds first.
//!
//! # Plans
//!
//! Every write of one action is `UPDATE … WHERE uuid = $1 AND <guard>`, a
//! primary key lookup whatever the statistics say; the batch forms join
//! `unnest` of arrays on the same key. The other indexes are partial and only
//! serve the sweeps and the per-object check, whose queries inline the state
//! list (see [`rows::state_literals`]) so that the planner can match them. No
//! index uses a lease column, as key or predicate, so that claims and
//! heartbeats can be HOT updates (migration `0004`). The plan test at the
//! end of this file checks each of these statements.

mod driver;
mod webhooks;
mod workers;

use crate::rows::{self, RowExt};
use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions, Postgres};
use sqlx::QueryBuilder;
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;
use stevedore_core::action::{Action, QueuePlace};
use stevedore_core::event::Event;
use stevedore_core::lifecycle::{Driver, StoredAction};
use stevedore_core::logline::{LogLine, NewLogLine};
use stevedore_core::object::Object;
use stevedore_core::progress::ProgressWrite;
use stevedore_core::session::{NewSession, Session};
use stevedore_core::state::ActionState;
use stevedore_core::store::{
    ActionFilter, ActionStore, ApiKeyInfo, Claim, Database, EventPoll, EventStore, LeaseToken, ObjectFilter,
    ObjectStore, OutboxEntry, Page, PolledEvent, Retention, RevokedKey, Scope, StoredKey, SystemLogStore,
    Tenancy, User, KEY_USE_PRECISION,
};
use stevedore_core::syslog::{Pruned, SystemLogEntry, SystemLogFilter};
use stevedore_core::{Error, Result};
use uuid::Uuid;

/// Connections per pool unless told otherwise: enough to keep a 2-core
/// database busy with the API, the relay and the workers of one process,
/// well under PostgreSQL's default limit of 100.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;

/// How long a query waits for a free connection before failing: long enough
/// to ride out a burst, short enough that an exhausted pool surfaces as an
/// error instead of a hung request.
pub const ACQUIRE_TIMEOUT: Duration = stevedore_core::config::DEFAULT_ACQUIRE_TIMEOUT;
/// A pooled connection idle at least this long is pinged before it is
/// handed out; one used more recently is handed out as it is.
///
/// The pool's default pings every connection on every acquire: one more
/// round trip, and a wake-up of the server process, before each
/// transaction. A connection that carried a statement a moment ago is
/// almost always still alive, and one that died with the server meanwhile
/// fails its first statement, which is an error the caller already
/// handles (a refused request, a retried final write). An outage of the
/// database lasts longer than this, so after it every idle connection is
/// tested again before use. (The pool still tests each connection when it
/// is returned.)
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// The events lock (see the module docs). The two-integer form of the
/// advisory lock functions has its own key space, apart from the bigint keys
/// of the object locks; the first half reads "STVD".
const EVENTS_LOCK: (i32, i32) = (0x5354_5644, 1);

/// Lists count their matches exactly up to this many; beyond it `total` is
/// the planner's estimate. An exact `count(*)` over a million rows costs a
/// few hundred milliseconds on every page, and the clients only use the
/// count for display: paging follows `next`, which stays exact.
const EXACT_COUNT_LIMIT: i64 = 10_000;

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

/// SQL built once from the state machine. The batch statements bind their
/// rows by name ([`super::unnest`]).
struct Sql {
    /// Takes the object locks of the keys `$1` (an array), in its order.
    lock_objects: String,
    /// Which of the objects `$1` (an array) are busy: one probe per object,
    /// however many actions an object has queued (the `LIMIT 1` keeps it a
    /// probe: an `EXISTS` may be planned as a join that reads every active
    /// action).
    objects_busy: String,
    /// The objects whose uuids are in `$1` (an array).
    objects_by_uuid: String,
    /// The heads ([`stevedore_core::lifecycle::ActionHead`]) of the actions `$1` (an array).
    action_heads: String,
    /// `action_heads`, locking the rows in uuid order.
    lock_action_heads: String,
    /// New actions ([`driver::ActionRows`]).
    insert_actions: String,
    /// Guarded state changes ([`driver::StateRows`]).
    update_states: String,
    /// For each object of `$1` (an array), its oldest Pending action to
    /// state `$2` when nothing holds the object, guarded by the sources `$3`
    /// (a parameter, not a literal: the planner would match a literal to the
    /// partial index's predicate and read that index whole instead of
    /// probing the primary key).
    promote: String,
    /// Clears the lease of action `$1` if token `$2` holds it and its state
    /// is one of `$3`, and sets its dispatch time.
    release: String,
    /// Replaces the mutable fields of object `$1` unless it is terminated.
    update_object: String,
    /// A changeset: system log entries ([`driver::LogRows`]), outbox rows,
    /// events ([`driver::EventRows`]) under the events lock (the last two
    /// parameters).
    write: String,
    /// In progress or Canceling actions dispatched before `$1` µs ago and
    /// not leased (never claimed, or handed back).
    redispatch: String,
    /// Of the actions `$1` (an array), those In progress or Canceling and
    /// not leased: their dispatch time is reset.
    redispatch_these: String,
    /// Up to `$1` running actions whose lease has expired, oldest expiry
    /// first (the reaper's sweep, over the partial index of running actions).
    expired_leases: String,
    /// Claims the actions `$1` with the tokens `$2` (arrays of the same
    /// length) for owner `$3`, lease `$4` µs, claimable states `$5`.
    claim_many: String,
    /// Sets the progress `$3` and message `$4` of the actions `$1` where
    /// the token `$2` holds the lease (arrays of the same length).
    record_progress: String,
    /// The queue places of the Pending actions of `$1` (an array) in the
    /// namespaces `$2` (an array; null: all): per object, its unfinished
    /// actions up to the newest asked for, over the partial index
    /// `actions_active_by_object`.
    queue_places: String,
    /// For each action of `$1` (an array), the oldest Pending action of
    /// its object after it ([`Driver::next_waiting`]).
    next_waiting: String,
}

static SQL: LazyLock<Sql> = LazyLock::new(|| {
    use driver::{ActionRows, EventRows, LogRows, StateRows};
    let active = rows::state_literals(&stevedore_core::lifecycle::active_states());
    let holding = rows::state_literals(&stevedore_core::lifecycle::holding_states());
    let promotable = rows::state_literals(ActionState::InProgress.sources());
    let claimable = rows::state_literals(&stevedore_core::lifecycle::claimable_states());
    let pending = rows::state_literals(&[ActionState::Pending]);
    let heads = "SELECT uuid, namespace, object_uuid, state, lease_token, claims, \
                     COALESCE(lease_expires_at < now(), false) AS lease_expired \
                 FROM actions WHERE uuid = ANY($1)";
    let events_from = LogRows::PARAMS + 2;
    let lock_from = events_from + EventRows::PARAMS;
    Sql {
        lock_objects: "SELECT pg_advisory_xact_lock(k) FROM \
             (SELECT k FROM unnest($1::bigint[]) WITH ORDINALITY AS t(k, i) ORDER BY i) AS ordered"
            .to_string(),
        objects_busy: format!(
            "SELECT t.o FROM unnest($1::uuid[]) AS t(o) \
             CROSS JOIN LATERAL (SELECT 1 FROM actions \
                 WHERE object_uuid = t.o AND state IN ({active}) LIMIT 1) AS busy"
        ),
        objects_by_uuid: format!(
            "SELECT {} FROM objects WHERE uuid = ANY($1)",
            rows::PG_OBJECT_COLUMNS
        ),
        action_heads: heads.to_string(),
        lock_action_heads: format!("{heads} ORDER BY uuid FOR UPDATE"),
        insert_actions: format!(
            "INSERT INTO actions (uuid, namespace, action, object, object_uuid, object_type, \
                 object_parents, verb, method, path, body, ip, location, user_name, user_agent, \
                 is_user_action, state, retry_of, start_date, end_date, dispatched_at) \
             SELECT t.uuid, t.namespace, t.action, t.object, t.object_uuid, t.object_type, \
                 t.object_parents::jsonb, t.verb, t.method, t.path, t.body, t.ip, t.location, \
                 t.user_name, t.user_agent, t.is_user_action, t.state, t.retry_of, now(), \
                 CASE WHEN t.fin THEN now() END, CASE WHEN t.dispatched THEN now() END \
             FROM {} ORDER BY t.i \
             RETURNING {}",
            ActionRows::unnest(1, "t"),
            rows::PG_ACTION_COLUMNS
        ),
        update_states: format!(
            "UPDATE actions SET state = t.target, \
                 end_date = CASE WHEN t.fin THEN now() ELSE actions.end_date END, \
                 lease_token = CASE WHEN t.fin THEN NULL ELSE actions.lease_token END, \
                 lease_owner = CASE WHEN t.fin THEN NULL ELSE actions.lease_owner END, \
                 lease_expires_at = CASE WHEN t.fin THEN NULL ELSE actions.lease_expires_at END, \
                 dispatched_at = CASE WHEN t.prog THEN now() ELSE actions.dispatched_at END \
             FROM {} \
             WHERE actions.uuid = t.uuid AND actions.state = ANY(string_to_array(t.sources, '|')) \
               AND (t.token IS NULL OR actions.lease_token = t.token) \
             RETURNING {}, EXISTS (SELECT 1 FROM actions AS w \
                 WHERE w.object_uuid = actions.object_uuid AND w.state IN ({promotable})) AS waiting",
            StateRows::unnest(1, "t"),
            qualified("actions", rows::PG_ACTION_COLUMNS)
        ),
        promote: format!(
            "UPDATE actions SET state = $2, dispatched_at = now() \
             FROM unnest($1::uuid[]) AS t(o) \
             CROSS JOIN LATERAL (SELECT uuid FROM actions \
                 WHERE object_uuid = t.o AND state IN ({promotable}) \
                 ORDER BY id LIMIT 1) AS next \
             LEFT JOIN LATERAL (SELECT 1 AS held FROM actions AS h \
                 WHERE h.object_uuid = t.o AND h.state IN ({holding}) LIMIT 1) AS h ON true \
             WHERE actions.uuid = next.uuid AND h.held IS NULL AND actions.state = ANY($3) \
             RETURNING {cols}",
            cols = qualified("actions", rows::PG_ACTION_COLUMNS)
        ),
        release: format!(
            "UPDATE actions SET lease_token = NULL, lease_owner = NULL, \
                 lease_expires_at = NULL, dispatched_at = now() \
             WHERE uuid = $1 AND lease_token = $2 AND state = ANY($3) RETURNING {}",
            rows::PG_ACTION_COLUMNS
        ),
        update_object: format!(
            "UPDATE objects SET name = $2, state = $3, attributes = $4::jsonb, deleted_at = $5, \
                 updated_at = now() \
             WHERE uuid = $1 AND deleted_at IS NULL \
             RETURNING {}",
            rows::PG_OBJECT_COLUMNS
        ),
        // Every data-modifying CTE runs to completion; the events draw their
        // `seq`s only after `lock` is held. The branches of the final UNION
        // ALL run in order (an Append without parallel workers, which no
        // data-modifying statement gets), so the outbox rows and log entries
        // are written before the lock is taken: it is held only for the
        // events and the commit.
        write: format!(
            "WITH queued AS (INSERT INTO outbox (action_uuid) \
                 SELECT a FROM unnest(${outbox}::uuid[]) WITH ORDINALITY AS t(a, i) ORDER BY i \
                 RETURNING id, action_uuid), \
             logs AS (INSERT INTO system_log (namespace, category, level, user_name, message) \
                 SELECT l.namespace, l.category, l.level, l.user_name, l.message FROM {logs} \
                 ORDER BY l.i RETURNING 1), \
             lock AS MATERIALIZED (SELECT pg_advisory_xact_lock(${lock_from}, ${lock_to})), \
             stored AS (INSERT INTO events \
                     (namespace, object_type, kind, uuid, resource_uri, state, parents, datetime) \
                 SELECT e.namespace, e.object_type, e.kind, e.uuid, e.resource_uri, e.state, \
                     e.parents::jsonb, now() FROM lock, {events} ORDER BY e.i \
                 RETURNING seq, datetime) \
             SELECT 'outbox' AS kind, NULL::bigint AS seq, NULL::timestamptz AS datetime, \
                 action_uuid, id FROM queued \
             UNION ALL \
             SELECT 'logs', NULL, NULL, NULL, count(*) FROM logs \
             UNION ALL \
             SELECT 'event', seq, datetime, NULL, NULL FROM stored",
            outbox = LogRows::PARAMS + 1,
            logs = LogRows::unnest(1, "l"),
            events = EventRows::unnest(events_from, "e"),
            lock_to = lock_from + 1,
        ),
        expired_leases: format!(
            "SELECT uuid FROM actions \
             WHERE state IN ({claimable}) AND lease_expires_at < now() \
             ORDER BY lease_expires_at LIMIT $1"
        ),
        claim_many: format!(
            "UPDATE actions SET claims = claims + 1, lease_token = t.token, lease_owner = $3, \
                 lease_expires_at = now() + $4 * interval '1 microsecond' \
             FROM unnest($1::uuid[], $2::uuid[]) AS t(uuid, token) \
             WHERE actions.uuid = t.uuid AND actions.state = ANY($5) \
               AND (actions.lease_token IS NULL OR actions.lease_expires_at < now()) \
             RETURNING actions.lease_token AS claim_token, {}",
            qualified("actions", rows::PG_ACTION_COLUMNS)
        ),
        record_progress: format!(
            // The rows are locked in uuid order first, the order of every
            // other statement that changes several actions, so a flush and
            // a batch of finishes or cancels never deadlock.
            "WITH locked AS (SELECT uuid FROM actions WHERE uuid = ANY($1) ORDER BY uuid FOR UPDATE) \
             UPDATE actions SET progress = t.progress, progress_message = t.message \
             FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::text[]) AS t(uuid, token, progress, message) \
             WHERE actions.uuid = t.uuid AND actions.lease_token = t.token \
               AND actions.uuid IN (SELECT uuid FROM locked) \
             RETURNING {}",
            qualified("actions", rows::PG_ACTION_COLUMNS)
        ),
        redispatch: format!(
            "UPDATE actions SET dispatched_at = now() \
             WHERE uuid IN (SELECT uuid FROM actions \
                            WHERE state IN ({claimable}) AND lease_token IS NULL \
                              AND dispatched_at < now() - $1 * interval '1 microsecond' \
                            ORDER BY dispatched_at LIMIT $2 \
                            FOR UPDATE SKIP LOCKED) \
             RETURNING uuid"
        ),
        redispatch_these: format!(
            "UPDATE actions SET dispatched_at = now() \
             WHERE uuid = ANY($1) AND state IN ({claimable}) AND lease_token IS NULL \
             RETURNING uuid"
        ),
        // The holder of an object is older than every action waiting
        // there (promotion takes the oldest), so in id order it comes
        // first: the action before a Pending one is what it waits behind.
        queue_places: format!(
            "WITH page AS (SELECT object_uuid, max(id) AS upto FROM actions \
                 WHERE uuid = ANY($1) AND state IN ({pending}) \
                   AND ($2::text[] IS NULL OR namespace = ANY($2)) \
                 GROUP BY object_uuid) \
             SELECT q.uuid, q.position, q.waiting_for FROM page \
             CROSS JOIN LATERAL (SELECT w.uuid, w.state, \
                     count(*) FILTER (WHERE w.state IN ({pending})) OVER (ORDER BY w.id) AS position, \
                     lag(w.uuid) OVER (ORDER BY w.id) AS waiting_for \
                 FROM actions AS w \
                 WHERE w.object_uuid = page.object_uuid AND w.state IN ({active}) \
                   AND w.id <= page.upto) AS q \
             WHERE q.state IN ({pending}) AND q.uuid = ANY($1)"
        ),
        next_waiting: format!(
            "SELECT t.l AS left_uuid, {cols} FROM unnest($1::uuid[]) AS t(l) \
             JOIN actions AS a ON a.uuid = t.l \
             CROSS JOIN LATERAL (SELECT * FROM actions AS w \
                 WHERE w.object_uuid = a.object_uuid AND w.state IN ({active}) \
                   AND w.state IN ({pending}) AND w.id > a.id \
                 ORDER BY w.id LIMIT 1) AS n",
            cols = qualified("n", rows::PG_ACTION_COLUMNS)
        ),
    }
});

/// `columns` (a comma-separated list) each prefixed with `table.`, for
/// statements that join another relation with the same column names.
fn qualified(table: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{table}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The store backed by PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects with [`DEFAULT_MAX_CONNECTIONS`] connections. Does not migrate.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// Connects with a pool of at most `max_connections`. Does not migrate.
    pub async fn connect_with(url: &str, max_connections: u32) -> Result<Self> {
        Self::connect_with_timeout(url, max_connections, ACQUIRE_TIMEOUT).await
    }

    /// [`PgStore::connect_with`], a query failing after `acquire_timeout`
    /// without a connection (the database unreachable, or the pool
    /// exhausted). Does not migrate.
    pub async fn connect_with_timeout(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect(url)
            .await?;
        Ok(Self::from_pool(pool))
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        PgStore { pool }
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Begins a transaction of batch writes (submissions, final writes) in
    /// which every statement runs its generic plan, of index probes.
    ///
    /// Their statements take arrays, so under the default `plan_cache_mode`
    /// PostgreSQL mostly plans every execution anew: a custom plan for the
    /// array at hand is estimated cheaper than the generic plan's guess of
    /// an array of unknown length. At 1,000 actions/s that planning was
    /// about a sixth of the server's CPU. A generic plan is made once per
    /// connection, though, from the table's size at that moment: on a new,
    /// still small table it reads the whole table or a whole index (a
    /// sequential scan; a hash join over every active action), and keeps
    /// doing so until the next `ANALYZE`, however large the table has grown
    /// (the default mode picks such a plan too, now and then, and keeps it,
    /// because its cost was estimated when it was cheap). So these
    /// transactions also turn off sequential scans, bitmap scans, hash joins
    /// and merge joins: each of their statements is a nested loop of index probes for
    /// the few rows a batch names, on an empty table as on a large one, which
    /// the plan tests at the end of this file check. The settings travel
    /// with the `BEGIN` (no round trip) and end with the transaction.
    async fn begin_batch(&self) -> Result<sqlx::Transaction<'static, Postgres>> {
        Ok(self.pool.begin_with(BEGIN_BATCH).await?)
    }
}

/// `BEGIN` of [`PgStore::begin_batch`].
const BEGIN_BATCH: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; \
     SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; \
     SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off";

/// The object lock's key: the uuid folded to 64 bits. A collision only makes
/// two objects share a lock, which costs some waiting, never correctness.
fn object_lock_key(object: Uuid) -> i64 {
    let (hi, lo) = object.as_u64_pair();
    (hi ^ lo) as i64
}

/// Appends the WHERE clause of an action list (scope and filter) to `q`.
fn push_action_filter<'a>(q: &mut QueryBuilder<'a, Postgres>, scope: Scope<'_>, f: &'a ActionFilter) {
    q.push(" WHERE TRUE");
    if let Some(ns) = rows::scope_namespaces(scope) {
        q.push(" AND namespace = ANY(").push_bind(ns).push(")");
    }
    if let Some(ns) = &f.namespace {
        q.push(" AND namespace = ").push_bind(ns);
    }
    if let Some(u) = f.uuid {
        q.push(" AND uuid = ").push_bind(u);
    }
    if let Some((lo, hi)) = f
        .uuid_prefix
        .as_deref()
        .and_then(stevedore_core::store::uuid_prefix_range)
    {
        q.push(" AND uuid BETWEEN ")
            .push_bind(lo)
            .push(" AND ")
            .push_bind(hi);
    }
    if !f.states.is_empty() {
        q.push(" AND state = ANY(")
            .push_bind(rows::state_names(&f.states))
            .push(")");
    }
    for (col, op, v) in [
        ("start_date", ">=", f.start_gte),
        ("start_date", "<=", f.start_lte),
        ("end_date", ">=", f.end_gte),
        ("end_date", "<=", f.end_lte),
    ] {
        if let Some(v) = v {
            q.push(format!(" AND {col} {op} ")).push_bind(v);
        }
    }
    if let Some(objects) = &f.objects {
        q.push(" AND object_uuid = ANY(")
            .push_bind(objects.clone())
            .push(")");
    }
    if let Some(t) = &f.object_type {
        q.push(" AND object_type = ").push_bind(t);
    }
}

/// Appends the WHERE clause of an object list to `q`.
fn push_object_filter<'a>(q: &mut QueryBuilder<'a, Postgres>, scope: Scope<'_>, f: &'a ObjectFilter) {
    q.push(" WHERE TRUE");
    if let Some(ns) = rows::scope_namespaces(scope) {
        q.push(" AND namespace = ANY(").push_bind(ns).push(")");
    }
    if let Some(ns) = &f.namespace {
        q.push(" AND namespace = ").push_bind(ns);
    }
    if let Some(t) = &f.object_type {
        q.push(" AND object_type = ").push_bind(t);
    }
    if let Some(p) = &f.parent {
        q.push(" AND parents ? ").push_bind(p);
    }
    if !f.include_deleted {
        q.push(" AND deleted_at IS NULL");
    }
}

#[async_trait]
impl Database for PgStore {
    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Two: a second batch keeps the second core's backend busy while the
    /// first commits (docs/benchmarks-history.md, round 6).
    fn batch_lanes(&self) -> usize {
        2
    }

    async fn begin_changes(&self) -> Result<Box<dyn Driver>> {
        Ok(Box::new(driver::PgDriver::new(self.begin_batch().await?)))
    }
}

#[async_trait]
impl Tenancy for PgStore {
    async fn create_user(&self, name: &str, namespaces: &[String]) -> Result<User> {
        let namespaces = rows::own_namespace_first(name, namespaces);
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO users (name) VALUES ($1)")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(|e| rows::conflict_if_unique(e, || format!("user {name} already exists")))?;
        sqlx::query(
            "INSERT INTO memberships (user_name, namespace, position) \
             SELECT $1, ns, pos - 1 FROM UNNEST($2::text[]) WITH ORDINALITY AS t(ns, pos)",
        )
        .bind(name)
        .bind(&namespaces)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(User {
            name: name.to_string(),
            namespaces,
            admin: false,
        })
    }

    async fn get_user(&self, name: &str) -> Result<Option<User>> {
        let rows = sqlx::query(
            "SELECT u.name, u.admin, m.namespace FROM users u \
             LEFT JOIN memberships m ON m.user_name = u.name \
             WHERE u.name = $1 ORDER BY m.position",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let admin = rows[0].flag("admin")?;
        let mut namespaces = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Some(ns) = row.opt_text("namespace")? {
                namespaces.push(ns);
            }
        }
        Ok(Some(User {
            name: name.to_string(),
            namespaces,
            admin,
        }))
    }

    async fn set_admin(&self, name: &str, admin: bool) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE users SET admin = $2 WHERE name = $1")
            .bind(name)
            .bind(admin)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("user {name}")));
        }
        sqlx::query("UPDATE credential_revision SET revision = revision + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn add_api_key(&self, user: &str, key_digest: &str) -> Result<i64> {
        let id =
            sqlx::query_scalar("INSERT INTO api_keys (user_name, key_digest) VALUES ($1, $2) RETURNING id")
                .bind(user)
                .bind(key_digest)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| {
                    rows::not_found_if_dangling(
                        e,
                        || format!("user {user}"),
                        || "API key already exists".to_string(),
                    )
                })?;
        Ok(id)
    }

    async fn credentials(&self, user: &str) -> Result<Option<(User, Vec<StoredKey>)>> {
        // Both statements whether or not the user exists: an unknown name
        // costs the same as a known one (see the trait's docs).
        let found = self.get_user(user).await?;
        let keys = sqlx::query("SELECT id, key_digest FROM api_keys WHERE user_name = $1 ORDER BY id")
            .bind(user)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::stored_key_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(found.map(|u| (u, keys)))
    }

    async fn api_keys(&self, user: &str) -> Result<Vec<ApiKeyInfo>> {
        if self.get_user(user).await?.is_none() {
            return Err(Error::NotFound(format!("user {user}")));
        }
        sqlx::query(
            "SELECT id, key_digest, created_at, last_used_at FROM api_keys \
             WHERE user_name = $1 ORDER BY id",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::api_key_from_row)
        .collect()
    }

    async fn record_key_use(&self, id: i64) -> Result<()> {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = now() WHERE id = $1 \
               AND (last_used_at IS NULL OR last_used_at < now() - $2 * interval '1 microsecond')",
        )
        .bind(id)
        .bind(rows::duration_micros(KEY_USE_PRECISION))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn revoke_api_key(&self, user: &str, id: i64) -> Result<RevokedKey> {
        let mut tx = self.pool.begin().await?;
        // The key row first: it locks the key, so no session made from it
        // can be inserted between the two deletes.
        let digest: Option<String> =
            sqlx::query_scalar("SELECT key_digest FROM api_keys WHERE id = $1 AND user_name = $2 FOR UPDATE")
                .bind(id)
                .bind(user)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(digest) = digest else {
            return Err(Error::NotFound(format!("API key {id} of user {user}")));
        };
        let sessions = sqlx::query("DELETE FROM sessions WHERE key_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE credential_revision SET revision = revision + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(RevokedKey {
            fingerprint: stevedore_core::auth::key_fingerprint(&digest),
            sessions,
        })
    }

    async fn credential_revision(&self) -> Result<i64> {
        let revision = sqlx::query_scalar("SELECT revision FROM credential_revision WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(revision)
    }

    async fn create_session(&self, session: &NewSession) -> Result<()> {
        // FOR KEY SHARE: a revocation under way (which holds the key row
        // FOR UPDATE) finishes first, and then there is no key to select.
        let done = sqlx::query(
            "INSERT INTO sessions (digest, user_name, key_id, expires_at) \
             SELECT $1, $2, id, $4 FROM api_keys WHERE id = $3 AND user_name = $2 FOR KEY SHARE",
        )
        .bind(&session.digest)
        .bind(&session.user)
        .bind(session.key_id)
        .bind(session.expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            rows::not_found_if_dangling(
                e,
                || format!("API key {} of user {}", session.key_id, session.user),
                || "session already exists".to_string(),
            )
        })?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!(
                "API key {} of user {}",
                session.key_id, session.user
            )));
        }
        Ok(())
    }

    async fn session(&self, digest: &str) -> Result<Option<Session>> {
        let row = sqlx::query(
            "SELECT user_name, key_id, expires_at, expires_at <= now() AS expired \
             FROM sessions WHERE digest = $1",
        )
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        if row.flag("expired")? {
            sqlx::query("DELETE FROM sessions WHERE digest = $1")
                .bind(digest)
                .execute(&self.pool)
                .await?;
            return Ok(None);
        }
        let key_id = row.int("key_id")?;
        let expires_at = row.time("expires_at")?;
        let user = self.get_user(&row.text("user_name")?).await?;
        Ok(user.map(|user| Session {
            user,
            key_id,
            expires_at,
        }))
    }

    async fn delete_session(&self, digest: &str) -> Result<Option<String>> {
        let mut tx = self.pool.begin().await?;
        let user: Option<String> =
            sqlx::query_scalar("DELETE FROM sessions WHERE digest = $1 RETURNING user_name")
                .bind(digest)
                .fetch_optional(&mut *tx)
                .await?;
        if user.is_some() {
            sqlx::query("UPDATE credential_revision SET revision = revision + 1 WHERE id = 1")
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(user)
    }
}

#[async_trait]
impl ObjectStore for PgStore {
    async fn get_object(&self, scope: Scope<'_>, uuid: Uuid) -> Result<Option<Object>> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM objects WHERE uuid = $1",
            rows::PG_OBJECT_COLUMNS
        ))
        .bind(uuid)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => {
                let object = rows::object_from_row(&row)?;
                Ok(scope.allows(&object.namespace).then_some(object))
            }
            None => Ok(None),
        }
    }

    async fn list_objects(
        &self,
        scope: Scope<'_>,
        filter: &ObjectFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Page<Object>> {
        let mut count = QueryBuilder::new("SELECT count(*) FROM objects");
        push_object_filter(&mut count, scope, filter);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        let limit = match filter.page_bytes {
            None => limit,
            Some(budget) => {
                let mut sizes =
                    QueryBuilder::new("SELECT octet_length(attributes::text)::BIGINT FROM objects");
                push_object_filter(&mut sizes, scope, filter);
                sizes
                    .push(" ORDER BY created_at, uuid LIMIT ")
                    .push_bind(limit)
                    .push(" OFFSET ")
                    .push_bind(offset);
                let sizes: Vec<i64> = sizes.build_query_scalar().fetch_all(&self.pool).await?;
                stevedore_core::store::rows_within_budget(sizes, budget)
            }
        };
        let mut q = QueryBuilder::new(format!("SELECT {} FROM objects", rows::PG_OBJECT_COLUMNS));
        push_object_filter(&mut q, scope, filter);
        q.push(" ORDER BY created_at, uuid LIMIT ")
            .push_bind(limit)
            .push(" OFFSET ")
            .push_bind(offset);
        let rows = q.build().fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(rows::object_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page { items, total })
    }

    async fn object_refs(
        &self,
        scope: Scope<'_>,
        filter: &ObjectFilter,
        limit: i64,
    ) -> Result<Vec<(Uuid, String)>> {
        let mut q = QueryBuilder::new("SELECT uuid, resource_uri FROM objects");
        push_object_filter(&mut q, scope, filter);
        q.push(" ORDER BY created_at, uuid LIMIT ").push_bind(limit);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| Ok((row.uuid("uuid")?, row.text("resource_uri")?)))
            .collect()
    }
}

#[async_trait]
impl ActionStore for PgStore {
    async fn get_action(&self, scope: Scope<'_>, uuid: Uuid) -> Result<Option<Action>> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM actions WHERE uuid = $1",
            rows::PG_ACTION_COLUMNS
        ))
        .bind(uuid)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => {
                let action = rows::stored_action(&row)?.action;
                Ok(scope.allows(&action.namespace).then_some(action))
            }
            None => Ok(None),
        }
    }

    async fn list_actions(
        &self,
        scope: Scope<'_>,
        filter: &ActionFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Page<Action>> {
        // A byte budget first measures the page's bodies (without reading them).
        let limit = match filter.page_bytes {
            None => limit,
            Some(budget) => {
                let mut sizes = QueryBuilder::new("SELECT octet_length(body)::BIGINT FROM actions");
                push_action_filter(&mut sizes, scope, filter);
                sizes
                    .push(" ORDER BY id DESC LIMIT ")
                    .push_bind(limit)
                    .push(" OFFSET ")
                    .push_bind(offset);
                let sizes: Vec<i64> = sizes.build_query_scalar().fetch_all(&self.pool).await?;
                stevedore_core::store::rows_within_budget(sizes, budget)
            }
        };
        // One row more than asked shows whether another page follows.
        let mut q = QueryBuilder::new(format!("SELECT {} FROM actions", rows::PG_ACTION_COLUMNS));
        push_action_filter(&mut q, scope, filter);
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(limit.saturating_add(1))
            .push(" OFFSET ")
            .push_bind(offset);
        let rows = q.build().fetch_all(&self.pool).await?;
        let more = rows.len() as i64 > limit;
        let items = rows
            .iter()
            .take(limit.max(0) as usize)
            .map(|r| Ok(rows::stored_action(r)?.action))
            .collect::<Result<Vec<_>>>()?;

        // Count exactly up to EXACT_COUNT_LIMIT; past it, ask the planner.
        let mut count = QueryBuilder::new("SELECT count(*) FROM (SELECT 1 FROM actions");
        push_action_filter(&mut count, scope, filter);
        count
            .push(" LIMIT ")
            .push_bind(EXACT_COUNT_LIMIT)
            .push(") AS capped");
        let mut total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        if total >= EXACT_COUNT_LIMIT {
            let mut explain = QueryBuilder::new("EXPLAIN (FORMAT JSON) SELECT 1 FROM actions");
            push_action_filter(&mut explain, scope, filter);
            let plan: serde_json::Value = explain.build_query_scalar().fetch_one(&self.pool).await?;
            let estimate = plan[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0) as i64;
            total = total.max(estimate);
        }
        // Never fewer than this page proves exist.
        let total = total.max(offset.saturating_add(items.len() as i64 + i64::from(more)));
        Ok(Page { items, total })
    }

    async fn queue_places(&self, scope: Scope<'_>, uuids: &[Uuid]) -> Result<HashMap<Uuid, QueuePlace>> {
        if uuids.is_empty() {
            return Ok(HashMap::new());
        }
        let found = sqlx::query(&SQL.queue_places)
            .bind(uuids)
            .bind(rows::scope_namespaces(scope))
            .fetch_all(&self.pool)
            .await?;
        found.iter().map(rows::queue_place).collect()
    }

    async fn unsent_outbox(&self, min_age: Duration, limit: i64) -> Result<Vec<OutboxEntry>> {
        let rows = sqlx::query(
            "SELECT id, action_uuid FROM outbox \
             WHERE sent_at IS NULL AND created_at <= now() - $1 * interval '1 microsecond' \
             ORDER BY id LIMIT $2",
        )
        .bind(rows::duration_micros(min_age))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(OutboxEntry {
                    id: row.int("id")?,
                    action_uuid: row.uuid("action_uuid")?,
                })
            })
            .collect()
    }

    async fn mark_outbox_sent(&self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        // Deleted, not marked: a mark was an UPDATE that wrote a new row
        // version and an index entry for every action, and the sent rows
        // stayed until their actions were pruned.
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn claim_actions(&self, uuids: &[Uuid], owner: &str, lease: Duration) -> Result<Vec<Claim>> {
        if uuids.is_empty() {
            return Ok(Vec::new());
        }
        let tokens: Vec<Uuid> = uuids.iter().map(|_| Uuid::new_v4()).collect();
        // The same guard as `claim_action`, one row per (uuid, token) pair.
        // `RETURNING` gives no order: put the claims back in the order asked.
        // Not a prepared statement of the connection: planned for each claim
        // (as the default mode mostly does anyway), so that no generic plan
        // made while the table was small, a scan of all of it, is kept as it
        // grows ([`PgStore::begin_batch`]). A claim runs outside the batch
        // transactions, whose settings would cost it two round trips.
        let rows = sqlx::query(&SQL.claim_many)
            .persistent(false)
            .bind(uuids)
            .bind(&tokens)
            .bind(owner)
            .bind(rows::duration_micros(lease))
            .bind(rows::state_names(&stevedore_core::lifecycle::claimable_states()))
            .fetch_all(&self.pool)
            .await?;
        let mut claims: std::collections::HashMap<Uuid, Claim> = rows
            .iter()
            .map(|row| {
                let action = rows::stored_action(row)?.action;
                Ok((
                    action.uuid,
                    Claim {
                        token: LeaseToken(row.uuid("claim_token")?),
                        action,
                    },
                ))
            })
            .collect::<Result<_>>()?;
        Ok(uuids.iter().filter_map(|u| claims.remove(u)).collect())
    }

    async fn heartbeat(&self, uuid: Uuid, token: LeaseToken, lease: Duration) -> Result<Option<ActionState>> {
        let state: Option<String> = sqlx::query_scalar(
            "UPDATE actions SET lease_expires_at = now() + $3 * interval '1 microsecond' \
             WHERE uuid = $1 AND lease_token = $2 RETURNING state",
        )
        .bind(uuid)
        .bind(token.0)
        .bind(rows::duration_micros(lease))
        .fetch_optional(&self.pool)
        .await?;
        state.as_deref().map(rows::parse_state).transpose()
    }

    async fn record_progress(&self, writes: &[ProgressWrite]) -> Result<Vec<StoredAction>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let uuids: Vec<Uuid> = writes.iter().map(|w| w.uuid).collect();
        let tokens: Vec<Uuid> = writes.iter().map(|w| w.token.0).collect();
        let progress: Vec<i32> = writes.iter().map(|w| i32::from(w.progress.percent)).collect();
        let messages: Vec<&str> = writes.iter().map(|w| w.progress.message.as_str()).collect();
        let rows = sqlx::query(&SQL.record_progress)
            .bind(&uuids)
            .bind(&tokens)
            .bind(&progress)
            .bind(&messages)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::stored_action).collect()
    }

    async fn append_logs(
        &self,
        uuid: Uuid,
        token: Option<LeaseToken>,
        lines: &[NewLogLine],
    ) -> Result<Vec<LogLine>> {
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let n = lines.len() as i64;
        let mut tx = self.pool.begin().await?;
        // The row lock this takes serialises appends to one action, so the
        // numbers handed out never overlap or leave gaps.
        let last: Option<i64> = sqlx::query_scalar(
            "UPDATE actions SET log_seq = log_seq + $2 \
             WHERE uuid = $1 AND ($3::uuid IS NULL OR lease_token = $3) \
             RETURNING log_seq",
        )
        .bind(uuid)
        .bind(n)
        .bind(token.map(|t| t.0))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(last) = last else {
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM actions WHERE uuid = $1)")
                .bind(uuid)
                .fetch_one(&mut *tx)
                .await?;
            return Err(if exists {
                rows::lease_lost()
            } else {
                rows::action_not_found(uuid)
            });
        };
        let stored: Vec<LogLine> = lines
            .iter()
            .zip(last - n + 1..)
            .map(|(line, seq)| LogLine {
                action_uuid: uuid,
                seq,
                log: line.log.clone(),
                timestamp: line.timestamp,
                stream: line.stream,
            })
            .collect();
        let seqs: Vec<i64> = stored.iter().map(|l| l.seq).collect();
        let texts: Vec<&str> = stored.iter().map(|l| l.log.as_str()).collect();
        let stamps: Vec<i64> = stored.iter().map(|l| l.timestamp).collect();
        let streams: Vec<&str> = stored.iter().map(|l| l.stream.as_str()).collect();
        sqlx::query(
            "INSERT INTO action_logs (action_uuid, seq, log, ts, stream) \
             SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::bigint[], $5::text[])",
        )
        .bind(uuid)
        .bind(&seqs)
        .bind(&texts)
        .bind(&stamps)
        .bind(&streams)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn logs(&self, uuid: Uuid, tail: Option<i64>) -> Result<Vec<LogLine>> {
        let rows = sqlx::query(
            "SELECT action_uuid, seq, log, ts, stream FROM ( \
                 SELECT * FROM action_logs WHERE action_uuid = $1 ORDER BY seq DESC LIMIT $2 \
             ) last ORDER BY seq",
        )
        .bind(uuid)
        .bind(tail.map(|t| t.max(0)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::log_line_from_row).collect()
    }

    async fn logs_after(&self, uuid: Uuid, after: i64, limit: i64) -> Result<Vec<LogLine>> {
        let rows = sqlx::query(
            "SELECT action_uuid, seq, log, ts, stream FROM action_logs \
             WHERE action_uuid = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(uuid)
        .bind(after)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::log_line_from_row).collect()
    }

    async fn expired_leases(&self, limit: i64) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(&SQL.expired_leases)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn redispatch_unclaimed(&self, older_than: Duration, limit: i64) -> Result<Vec<Uuid>> {
        let uuids = sqlx::query_scalar(&SQL.redispatch)
            .bind(rows::duration_micros(older_than))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(uuids)
    }

    async fn redispatch_actions(&self, uuids: &[Uuid]) -> Result<Vec<Uuid>> {
        let uuids = sqlx::query_scalar(&SQL.redispatch_these)
            .bind(uuids)
            .fetch_all(&self.pool)
            .await?;
        Ok(uuids)
    }
}

#[async_trait]
impl EventStore for PgStore {
    async fn events_after(&self, scope: Scope<'_>, after: i64, limit: i64) -> Result<Vec<Event>> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM events \
             WHERE seq > $1 AND ($2::text[] IS NULL OR namespace = ANY($2)) \
             ORDER BY seq LIMIT $3",
            rows::PG_EVENT_COLUMNS
        ))
        .bind(after)
        .bind(rows::scope_namespaces(scope))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::event_from_row).collect()
    }

    async fn poll_events(&self, scope: Scope<'_>, poll: EventPoll, limit: i64) -> Result<Vec<PolledEvent>> {
        // The window of events first (by the primary key, or by namespace
        // and seq), then one probe of the actions' key per action event.
        let (after, order) = match poll {
            EventPoll::After(seq) => (seq, "seq"),
            EventPoll::Latest => (0, "seq DESC"),
        };
        let rows = sqlx::query(&format!(
            "SELECT e.seq, e.namespace, e.object_type, e.kind, e.uuid, e.resource_uri, e.state, \
                 e.parents::text AS parents, e.datetime, a.user_name AS requester FROM ( \
                 SELECT * FROM events \
                 WHERE seq > $1 AND ($2::text[] IS NULL OR namespace = ANY($2)) \
                 ORDER BY {order} LIMIT $3 \
             ) e LEFT JOIN actions a ON e.object_type = 'action' AND a.uuid = e.uuid::uuid \
             ORDER BY e.seq"
        ))
        .bind(after)
        .bind(rows::scope_namespaces(scope))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PolledEvent {
                    event: rows::event_from_row(row)?,
                    user: row.opt_text("requester")?,
                })
            })
            .collect()
    }

    async fn last_event_seq(&self) -> Result<i64> {
        let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0)::BIGINT FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(seq)
    }
}

#[async_trait]
impl SystemLogStore for PgStore {
    async fn system_log(
        &self,
        scope: Scope<'_>,
        f: &SystemLogFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<SystemLogEntry>> {
        let mut q = QueryBuilder::new(
            "SELECT id, (extract(epoch FROM ts) * 1000000)::bigint AS ts_micros, category, level, \
                    user_name, message FROM system_log WHERE TRUE",
        );
        if let Some(ns) = rows::scope_namespaces(scope) {
            q.push(" AND namespace = ANY(").push_bind(ns).push(")");
        }
        if let Some(t) = f.time_start {
            q.push(" AND ts >= to_timestamp(").push_bind(t as f64).push(")");
        }
        if let Some(t) = f.time_end {
            q.push(" AND ts < to_timestamp(")
                .push_bind(t.saturating_add(1) as f64)
                .push(")");
        }
        if let Some(u) = &f.user {
            q.push(" AND user_name = ").push_bind(u.clone());
        }
        if let Some(l) = f.level {
            q.push(" AND level = ").push_bind(l.as_str());
        }
        if let Some(c) = &f.category {
            q.push(" AND category = ").push_bind(c.clone());
        }
        if let Some(t) = &f.text {
            q.push(" AND strpos(lower(message), lower(")
                .push_bind(t.clone())
                .push(")) > 0");
        }
        if let Some(b) = f.before_id {
            q.push(" AND id < ").push_bind(b);
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(limit)
            .push(" OFFSET ")
            .push_bind(offset);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(rows::system_log_from_row).collect()
    }
}

#[async_trait]
impl Retention for PgStore {
    async fn prune(&self, older_than: Duration, max_system_log: i64) -> Result<Pruned> {
        let age = rows::duration_micros(older_than);
        let mut tx = self.pool.begin().await?;
        let mut system_log =
            sqlx::query("DELETE FROM system_log WHERE ts < now() - $1 * interval '1 microsecond'")
                .bind(age)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        // Per tenant: each namespace (and the operators' entries, without
        // one) keeps its newest `max_system_log`, each found through the
        // (namespace, id) index.
        let tenants: Vec<Option<String>> = sqlx::query_scalar("SELECT DISTINCT namespace FROM system_log")
            .fetch_all(&mut *tx)
            .await?;
        let keep = max_system_log.max(0);
        for tenant in tenants {
            let q = match &tenant {
                Some(ns) => sqlx::query(
                    "DELETE FROM system_log WHERE namespace = $1 AND id <= \
                     (SELECT id FROM system_log WHERE namespace = $1 ORDER BY id DESC OFFSET $2 LIMIT 1)",
                )
                .bind(ns)
                .bind(keep),
                None => sqlx::query(
                    "DELETE FROM system_log WHERE namespace IS NULL AND id <= \
                     (SELECT id FROM system_log WHERE namespace IS NULL ORDER BY id DESC OFFSET $1 LIMIT 1)",
                )
                .bind(keep),
            };
            system_log += q.execute(&mut *tx).await?.rows_affected();
        }
        let events = sqlx::query("DELETE FROM events WHERE datetime < now() - $1 * interval '1 microsecond'")
            .bind(age)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let finished = rows::state_names(&[ActionState::Success, ActionState::Failed, ActionState::Canceled]);
        let old: Vec<Uuid> = sqlx::query_scalar(
            "SELECT uuid FROM actions WHERE state = ANY($1) AND end_date < now() - $2 * interval '1 microsecond'",
        )
        .bind(&finished)
        .bind(age)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM action_logs WHERE action_uuid = ANY($1)")
            .bind(&old)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM outbox WHERE action_uuid = ANY($1)")
            .bind(&old)
            .execute(&mut *tx)
            .await?;
        let actions = sqlx::query("DELETE FROM actions WHERE uuid = ANY($1) AND state = ANY($2)")
            .bind(&old)
            .bind(&finished)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let sessions = sqlx::query("DELETE FROM sessions WHERE expires_at <= now()")
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(Pruned {
            system_log,
            actions,
            events,
            sessions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::postgres::PgConnection;
    use stevedore_core::testing::TestDatabase;

    /// The plan `sql` (an `EXPLAIN`, with whatever precedes or follows it)
    /// prints, one line per row.
    async fn plan_text(conn: &mut PgConnection, sql: &str) -> String {
        sqlx::raw_sql(sql)
            .fetch_all(conn)
            .await
            .expect("EXPLAIN")
            .iter()
            .map(|r| r.text("QUERY PLAN"))
            .collect::<Result<Vec<_>>>()
            .expect("plan text")
            .join("\n")
    }

    /// Whether every table access of `plan` (EXPLAIN text) is a probe: an
    /// index scan with an `Index Cond`, under nested loops only. A scan of
    /// a whole index (a partial index's predicate is no condition), a
    /// sequential scan, a hash or a merge join reads every row, however few
    /// the batch names.
    fn only_probes(plan: &str) -> bool {
        let lines: Vec<&str> = plan.lines().collect();
        let scans_index = |l: &str| l.contains("Index Scan") || l.contains("Index Only Scan");
        !plan.contains("Seq Scan")
            && !plan.contains("Hash")
            && !plan.contains("Merge")
            && lines.iter().enumerate().all(|(i, l)| {
                !scans_index(l)
                    || lines[i + 1..]
                        .iter()
                        .take_while(|n| !n.contains("->"))
                        .any(|n| n.contains("Index Cond"))
            })
    }

    /// The plans of the batch transactions ([`PgStore::begin_batch`]):
    /// generic, and made once per connection from the table's size at that
    /// moment, they must probe their indexes whether that table was empty
    /// or held thousands of active actions (no workers: everything In
    /// progress), without statistics (`ANALYZE` has not run yet).
    #[tokio::test]
    async fn batch_transactions_plan_index_probes_on_new_tables() {
        let db = TestDatabase::create().await;
        let store = PgStore::connect_with(db.url(), 1).await.expect("connect");
        store.migrate().await.expect("migrate");
        let uuid = format!("ARRAY['{}']::uuid[]", Uuid::new_v4());
        let cases = [
            (
                "objects_by_uuid",
                "uuid[]",
                SQL.objects_by_uuid.as_str(),
                uuid.clone(),
            ),
            ("objects_busy", "uuid[]", SQL.objects_busy.as_str(), uuid.clone()),
            ("action_heads", "uuid[]", SQL.action_heads.as_str(), uuid.clone()),
            (
                "lock_action_heads",
                "uuid[]",
                SQL.lock_action_heads.as_str(),
                uuid.clone(),
            ),
            (
                "update_states",
                "uuid[], text[], text[], uuid[], boolean[], boolean[]",
                SQL.update_states.as_str(),
                format!("{uuid}, ARRAY['Success'], ARRAY['In progress'], {uuid}, ARRAY[true], ARRAY[false]"),
            ),
            (
                "promote",
                "uuid[], text, text[]",
                SQL.promote.as_str(),
                format!("{uuid}, 'In progress', ARRAY['Pending']"),
            ),
        ];
        for rows in ["empty", "5,000 active actions"] {
            if rows != "empty" {
                sqlx::raw_sql(
                    "INSERT INTO actions (uuid, namespace, action, object, object_uuid, object_type, \
                         verb, method, path, body, ip, location, user_name, user_agent, is_user_action, \
                         state, dispatched_at) \
                     SELECT gen_random_uuid(), 'acme', 'Service Start', '/o/', gen_random_uuid(), \
                         'service', 'start', 'POST', '/p/', '', '', '', 'ann', 'ua', true, \
                         'In progress', now() \
                     FROM generate_series(1, 5000); \
                     INSERT INTO objects (uuid, namespace, object_type, resource_uri, name, state, created_at, updated_at) \
                     SELECT gen_random_uuid(), 'acme', 'service', '/o/' || i, 'web', 'Running', now(), now() \
                     FROM generate_series(1, 5000) AS i;",
                )
                .execute(store.pool())
                .await
                .expect("seed");
            }
            let mut tx = store.begin_batch().await.expect("begin");
            let mode: String = sqlx::query_scalar("SELECT current_setting('plan_cache_mode')")
                .fetch_one(&mut *tx)
                .await
                .expect("setting");
            assert_eq!(mode, "force_generic_plan");
            for (name, types, sql, args) in &cases {
                sqlx::raw_sql(&format!("PREPARE {name}({types}) AS {sql}"))
                    .execute(&mut *tx)
                    .await
                    .expect("PREPARE");
                let plan = plan_text(
                    &mut tx,
                    &format!("EXPLAIN EXECUTE {name}({args}); DEALLOCATE {name}"),
                )
                .await;
                assert!(
                    only_probes(&plan),
                    "{name}, {rows}: not only index probes:\n{plan}"
                );
            }
            tx.commit().await.expect("commit");
        }
        // The settings end with the transaction.
        let mode: String = sqlx::query_scalar("SELECT current_setting('plan_cache_mode')")
            .fetch_one(store.pool())
            .await
            .expect("setting");
        assert_eq!(mode, "auto");
    }

    #[test]
    fn a_whole_index_scan_is_no_probe() {
        let probe = "Nested Loop Semi Join\n  ->  Function Scan on unnest t\n  ->  Index Only Scan using actions_active_by_object on actions\n        Index Cond: (object_uuid = t.o)";
        assert!(only_probes(probe));
        let whole = "Nested Loop Semi Join\n  ->  Function Scan on unnest t\n  ->  Index Only Scan using actions_active_by_object on actions\n        Filter: (object_uuid = t.o)";
        assert!(!only_probes(whole));
        let hashed = "Hash Semi Join\n  Hash Cond: (t.o = actions.object_uuid)\n  ->  Bitmap Heap Scan on actions\n        ->  Bitmap Index Scan on actions_active_by_object";
        assert!(!only_probes(hashed));
    }

    /// DESIGN.md, Performance: a guarded write that picks a state index over
    /// the primary key loses two orders of magnitude. With a table of mostly
    /// finished actions (and as many objects) and fresh statistics, every
    /// query must use its index, both with custom plans and with the generic
    /// plan a prepared statement may settle on.
    #[tokio::test]
    async fn guarded_writes_use_the_primary_key_and_sweeps_their_partial_indexes() {
        let db = TestDatabase::create().await;
        let store = PgStore::connect_with(db.url(), 1).await.expect("connect");
        store.migrate().await.expect("migrate");
        let mut conn = store.pool().acquire().await.expect("connection");
        sqlx::raw_sql(
            "INSERT INTO actions (uuid, namespace, action, object, object_uuid, object_type, \
                 verb, method, path, body, ip, location, user_name, user_agent, is_user_action, \
                 state, dispatched_at) \
             SELECT gen_random_uuid(), 'acme', 'Service Start', '/o/', gen_random_uuid(), \
                 'service', 'start', 'POST', '/p/', '', '', '', 'ann', 'ua', true, \
                 CASE WHEN i % 500 = 0 THEN 'In progress' ELSE 'Success' END, now() \
             FROM generate_series(1, 20000) AS i; \
             INSERT INTO objects (uuid, namespace, object_type, resource_uri, name, state, created_at, updated_at) \
             SELECT gen_random_uuid(), 'acme', 'service', '/o/' || i, 'web', 'Running', now(), now() \
             FROM generate_series(1, 20000) AS i; \
             ANALYZE actions; ANALYZE objects;",
        )
        .execute(&mut *conn)
        .await
        .expect("seed");

        let uuid = format!("'{}'", Uuid::new_v4());
        let cases = [
            (
                "redispatch",
                "bigint, bigint",
                SQL.redispatch.as_str(),
                "1000000, 100".to_string(),
                &["actions_running"][..],
            ),
            (
                "expired_leases",
                "bigint",
                SQL.expired_leases.as_str(),
                "100".to_string(),
                &["actions_running"][..],
            ),
            (
                "objects_busy",
                "uuid[]",
                SQL.objects_busy.as_str(),
                format!("ARRAY[{uuid}]::uuid[]"),
                &["actions_active_by_object"][..],
            ),
            (
                "objects_by_uuid",
                "uuid[]",
                SQL.objects_by_uuid.as_str(),
                format!("ARRAY[{uuid}]::uuid[]"),
                &["objects_pkey"][..],
            ),
            (
                "claim_many",
                "uuid[], uuid[], text, bigint, text[]",
                SQL.claim_many.as_str(),
                format!("ARRAY[{uuid}]::uuid[], ARRAY[{uuid}]::uuid[], 'w', 1000, ARRAY['In progress']"),
                &["actions_pkey"][..],
            ),
            (
                "update_states",
                "uuid[], text[], text[], uuid[], boolean[], boolean[]",
                SQL.update_states.as_str(),
                format!(
                    "ARRAY[{uuid}]::uuid[], ARRAY['Success'], ARRAY['In progress|Canceling'], \
                     ARRAY[{uuid}]::uuid[], ARRAY[true], ARRAY[false]"
                ),
                &["actions_pkey"][..],
            ),
            (
                "promote",
                "uuid[], text, text[]",
                SQL.promote.as_str(),
                format!("ARRAY[{uuid}]::uuid[], 'In progress', ARRAY['Pending']"),
                &["actions_active_by_object", "actions_pkey"][..],
            ),
            (
                "action_heads",
                "uuid[]",
                SQL.action_heads.as_str(),
                format!("ARRAY[{uuid}]::uuid[]"),
                &["actions_pkey"][..],
            ),
            (
                "release",
                "uuid, uuid, text[]",
                SQL.release.as_str(),
                format!("{uuid}, {uuid}, ARRAY['In progress']"),
                &["actions_pkey"][..],
            ),
            (
                "update_object",
                "uuid, text, text, text, timestamptz",
                SQL.update_object.as_str(),
                format!("{uuid}, 'web', 'Running', '{{}}', NULL"),
                &["objects_pkey"][..],
            ),
            (
                "lock_action_heads",
                "uuid[]",
                SQL.lock_action_heads.as_str(),
                format!("ARRAY[{uuid}]::uuid[]"),
                &["actions_pkey"][..],
            ),
        ];
        for (name, types, sql, args, indexes) in cases {
            sqlx::raw_sql(&format!("PREPARE {name}({types}) AS {sql}"))
                .execute(&mut *conn)
                .await
                .expect("PREPARE");
            for mode in ["force_custom_plan", "force_generic_plan"] {
                let plan = plan_text(
                    &mut conn,
                    &format!("SET plan_cache_mode = {mode}; EXPLAIN EXECUTE {name}({args})"),
                )
                .await;
                for index in indexes {
                    assert!(plan.contains(index), "{name}, {mode}: no {index} in\n{plan}");
                }
            }
        }
    }
}
