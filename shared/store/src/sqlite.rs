//! The SQLite store: the backend of `stevedore dev`, one file, no server.
//!
//! It keeps the same promises as [`super::postgres::PgStore`] (the same
//! conformance suite runs against both) and mirrors its structure, function
//! for function, so a change to one is easy to carry to the other.
//!
//! # Concurrency
//!
//! The pool has exactly one connection, and every transaction starts with
//! `BEGIN IMMEDIATE`. Within the process, that serialises transactions
//! outright: a submit's "is the object busy?" check and its insert, or a
//! finish and its promotion, can never interleave with another writer, so the
//! object and events locks that PostgreSQL needs have no counterpart here, and
//! event numbers follow commit order by construction. `BEGIN IMMEDIATE` takes
//! the database's write lock up front, so another process sharing the file
//! waits (up to [`BUSY_TIMEOUT`]) instead of failing on a lock upgrade midway.
//! A single writer is also all SQLite offers; the cost is that reads queue
//! behind writes, which is fine for one developer's machine.
//!
//! # Types
//!
//! Uuids are lowercase hyphenated text, instants integer microseconds since
//! the epoch (taken from the process clock, which is the database's clock
//! here), JSON is text. Lists (states, namespaces) are bound as one JSON
//! array and read with `json_each`, except where a partial index must match
//! (see [`rows::state_literals`]).

mod checkpoint;
mod driver;
mod webhooks;
mod workers;

use crate::rows::{self, RowExt};
use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
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

/// How long a statement waits for another process's write lock on the file
/// before failing with "database is locked".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a caller waits for the one connection. Every transaction is
/// short, so a long wait means a burst of many callers, not a stuck one.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/sqlite");

/// SQL built once from the state machine.
/// (The per-object queries name their partial index with `INDEXED BY`: the
/// general `actions_by_object` index, which serves lists, would otherwise
/// tempt the planner into walking an object's whole history.)
struct Sql {
    /// The guarded state change: moves action `1` to state `2` when its state
    /// is one of `3` (the target's sources) and `4` (a lease token, or null)
    /// still holds it; `5` says the target is final, `6` that it is In progress, `7` is now.
    transition: String,
    /// Whether an object has an action that is not over (`?1` object uuid).
    object_busy: String,
    /// Promotes the oldest Pending action of an object when nothing holds it.
    promote_next: String,
    /// In progress actions dispatched before `?2` and never claimed.
    redispatch: String,
    /// Of the actions in the JSON list `?2`, those In progress or Canceling
    /// and not leased, their dispatch time set to `?1`.
    redispatch_these: String,
    /// New actions: the JSON array `?1` of rows bound by name
    /// ([`driver::ActionRow`]), at instant `?2`.
    insert_actions: String,
    /// The queue places of the Pending actions of the JSON list `?1` in
    /// the namespaces of the JSON list `?2` (null: all): per object, its
    /// unfinished actions up to the newest asked for.
    queue_places: String,
    /// The oldest Pending action of the object of action `?1` after it
    /// ([`Driver::next_waiting`]).
    next_waiting: String,
}

static SQL: LazyLock<Sql> = LazyLock::new(|| {
    // SQLite uses a partial index only when the query repeats the index's
    // predicate term for term, hence `state IN (<active>)` next to narrower
    // state lists below.
    let active = rows::state_literals(&stevedore_core::lifecycle::active_states());
    let holding = rows::state_literals(&stevedore_core::lifecycle::holding_states());
    let promotable = rows::state_literals(ActionState::InProgress.sources());
    let claimable = rows::state_literals(&stevedore_core::lifecycle::claimable_states());
    let pending = rows::state_literals(&[ActionState::Pending]);
    Sql {
        transition: format!(
            "UPDATE actions SET state = ?2, \
                 end_date = CASE WHEN ?5 THEN ?7 ELSE end_date END, \
                 lease_token = CASE WHEN ?5 THEN NULL ELSE lease_token END, \
                 lease_owner = CASE WHEN ?5 THEN NULL ELSE lease_owner END, \
                 lease_expires_at = CASE WHEN ?5 THEN NULL ELSE lease_expires_at END, \
                 dispatched_at = CASE WHEN ?6 THEN ?7 ELSE dispatched_at END \
             WHERE uuid = ?1 AND state IN (SELECT value FROM json_each(?3)) \
               AND (?4 IS NULL OR lease_token = ?4) \
             RETURNING {}",
            rows::ACTION_COLUMNS
        ),
        object_busy: format!(
            "SELECT EXISTS (SELECT 1 FROM actions INDEXED BY actions_active_by_object \
             WHERE object_uuid = ?1 AND state IN ({active}))"
        ),
        promote_next: format!(
            "UPDATE actions SET state = ?2, dispatched_at = ?3 \
             WHERE uuid = (SELECT uuid FROM actions INDEXED BY actions_active_by_object \
                           WHERE object_uuid = ?1 AND state IN ({active}) \
                             AND state IN ({promotable}) \
                           ORDER BY id LIMIT 1) \
               AND state IN ({promotable}) \
               AND NOT EXISTS (SELECT 1 FROM actions INDEXED BY actions_active_by_object \
                               WHERE object_uuid = ?1 AND state IN ({active}) \
                                 AND state IN ({holding})) \
             RETURNING {cols}",
            cols = rows::ACTION_COLUMNS
        ),
        redispatch: format!(
            "UPDATE actions SET dispatched_at = ?1 \
             WHERE uuid IN (SELECT uuid FROM actions \
                            WHERE state IN ({claimable}) AND lease_token IS NULL \
                              AND dispatched_at < ?2 \
                            ORDER BY dispatched_at LIMIT ?3) \
             RETURNING uuid"
        ),
        insert_actions: format!(
            "INSERT INTO actions (uuid, namespace, action, object, object_uuid, object_type, \
                 object_parents, verb, method, path, body, ip, location, user_name, user_agent, \
                 is_user_action, state, retry_of, start_date, end_date, dispatched_at) \
             SELECT {fields}, ?2, \
                 CASE WHEN json_extract(value, '$.fin') THEN ?2 END, \
                 CASE WHEN json_extract(value, '$.dispatched') THEN ?2 END \
             FROM json_each(?1) ORDER BY key \
             RETURNING {cols}",
            fields = [
                "uuid",
                "namespace",
                "action",
                "object",
                "object_uuid",
                "object_type",
                "object_parents",
                "verb",
                "method",
                "path",
                "body",
                "ip",
                "location",
                "user_name",
                "user_agent",
                "is_user_action",
                "state",
                "retry_of",
            ]
            .map(|f| format!("json_extract(value, '$.{f}')"))
            .join(", "),
            cols = rows::ACTION_COLUMNS
        ),
        redispatch_these: format!(
            "UPDATE actions SET dispatched_at = ?1 \
             WHERE uuid IN (SELECT value FROM json_each(?2)) \
               AND state IN ({claimable}) AND lease_token IS NULL \
             RETURNING uuid"
        ),
        // The holder of an object is older than every action waiting
        // there (promotion takes the oldest), so in id order it comes
        // first: the action before a Pending one is what it waits behind.
        queue_places: format!(
            "WITH page AS (SELECT object_uuid, max(id) AS upto FROM actions \
                 WHERE uuid IN (SELECT value FROM json_each(?1)) AND state IN ({pending}) \
                   AND (?2 IS NULL OR namespace IN (SELECT value FROM json_each(?2))) \
                 GROUP BY object_uuid), \
             queue AS (SELECT w.uuid, w.state, \
                     sum(CASE WHEN w.state IN ({pending}) THEN 1 ELSE 0 END) OVER win AS position, \
                     lag(w.uuid) OVER win AS waiting_for \
                 FROM page JOIN actions AS w INDEXED BY actions_active_by_object \
                     ON w.object_uuid = page.object_uuid AND w.state IN ({active}) \
                    AND w.id <= page.upto \
                 WINDOW win AS (PARTITION BY w.object_uuid ORDER BY w.id)) \
             SELECT uuid, position, waiting_for FROM queue \
             WHERE state IN ({pending}) AND uuid IN (SELECT value FROM json_each(?1))"
        ),
        next_waiting: format!(
            "SELECT {cols} FROM actions INDEXED BY actions_active_by_object \
             WHERE object_uuid = (SELECT object_uuid FROM actions WHERE uuid = ?1) \
               AND state IN ({active}) AND state IN ({pending}) \
               AND id > (SELECT id FROM actions WHERE uuid = ?1) \
             ORDER BY id LIMIT 1",
            cols = rows::ACTION_COLUMNS
        ),
    }
});

/// The store backed by one SQLite file (or memory).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Background WAL checkpoints of a file database ([`checkpoint`]),
    /// stopped with the last clone.
    _checkpointer: Option<Arc<checkpoint::Checkpointer>>,
}

impl SqliteStore {
    /// Opens `sqlite://path` (created if missing) or `sqlite::memory:`, in WAL
    /// mode with foreign keys on; a file database is checkpointed in the
    /// background ([`checkpoint`]). Does not migrate.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across application crashes in WAL mode; only a
            // power loss can drop the last commits, acceptable for `dev`.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let file = !checkpoint::in_memory(url);
        let options = match file {
            true => options.pragma("wal_autocheckpoint", checkpoint::SAFETY_NET_PAGES.to_string()),
            false => options,
        };
        // One connection, never recycled: the concurrency model (module docs),
        // and an in-memory database lives exactly as long as its connection.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        Ok(SqliteStore {
            pool,
            _checkpointer: file.then(|| Arc::new(checkpoint::spawn(options))),
        })
    }

    /// Wraps an existing pool. It should have a single connection (module
    /// docs); its database checkpoints as its connection says.
    pub fn from_pool(pool: SqlitePool) -> Self {
        SqliteStore {
            pool,
            _checkpointer: None,
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Starts a transaction holding the write lock (module docs).
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// The current instant at the precision stored.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The instant `d` from `t`, in stored microseconds.
fn micros_after(t: DateTime<Utc>, d: Duration) -> i64 {
    rows::to_micros(t).saturating_add(rows::duration_micros(d))
}

/// The instant `d` before `t`, in stored microseconds.
fn micros_before(t: DateTime<Utc>, d: Duration) -> i64 {
    rows::to_micros(t).saturating_sub(rows::duration_micros(d))
}

/// A list bound as one JSON array parameter, for `IN (SELECT value FROM json_each(?))`.
fn json_list<T: serde::Serialize>(items: &[T]) -> Result<String> {
    Ok(serde_json::to_string(items)?)
}

/// A list read a page at a time: its count, the rows that fit the page's
/// byte budget (measured by the size of `large`, without reading it), and the
/// rows.
struct List {
    table: &'static str,
    columns: &'static str,
    large: &'static str,
    order: &'static str,
}

impl List {
    #[allow(clippy::too_many_arguments)]
    async fn page<T>(
        &self,
        pool: &SqlitePool,
        filter: impl Fn(&mut QueryBuilder<'_, Sqlite>) -> Result<()>,
        budget: Option<usize>,
        limit: i64,
        offset: i64,
        decode: impl Fn(&sqlx::sqlite::SqliteRow) -> Result<T>,
    ) -> Result<Page<T>> {
        let select = |what: &str| {
            let mut q = QueryBuilder::new(format!("SELECT {what} FROM {}", self.table));
            filter(&mut q).map(|()| q)
        };
        let paged = |q: &mut QueryBuilder<'_, Sqlite>, limit: i64| {
            q.push(format!(" ORDER BY {} LIMIT ", self.order))
                .push_bind(limit)
                .push(" OFFSET ")
                .push_bind(offset);
        };
        let total: i64 = select("count(*)")?.build_query_scalar().fetch_one(pool).await?;
        let limit = match budget {
            None => limit,
            Some(budget) => {
                let mut sizes = select(&format!("length(CAST({} AS BLOB))", self.large))?;
                paged(&mut sizes, limit);
                let sizes: Vec<i64> = sizes.build_query_scalar().fetch_all(pool).await?;
                stevedore_core::store::rows_within_budget(sizes, budget)
            }
        };
        let mut q = select(self.columns)?;
        paged(&mut q, limit);
        let items = q
            .build()
            .fetch_all(pool)
            .await?
            .iter()
            .map(decode)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page { items, total })
    }
}

/// Appends the WHERE clause of an action list (scope and filter) to `q`.
fn push_action_filter(q: &mut QueryBuilder<'_, Sqlite>, scope: Scope<'_>, f: &ActionFilter) -> Result<()> {
    q.push(" WHERE 1");
    if let Some(ns) = rows::scope_namespaces(scope) {
        q.push(" AND namespace IN (SELECT value FROM json_each(")
            .push_bind(json_list(&ns)?)
            .push("))");
    }
    if let Some(ns) = &f.namespace {
        q.push(" AND namespace = ").push_bind(ns.clone());
    }
    if let Some(u) = f.uuid {
        q.push(" AND uuid = ").push_bind(u.to_string());
    }
    if let Some((lo, hi)) = f
        .uuid_prefix
        .as_deref()
        .and_then(stevedore_core::store::uuid_prefix_range)
    {
        q.push(" AND uuid BETWEEN ")
            .push_bind(lo.to_string())
            .push(" AND ")
            .push_bind(hi.to_string());
    }
    if !f.states.is_empty() {
        q.push(" AND state IN (SELECT value FROM json_each(")
            .push_bind(json_list(&rows::state_names(&f.states))?)
            .push("))");
    }
    for (col, op, v) in [
        ("start_date", ">=", f.start_gte),
        ("start_date", "<=", f.start_lte),
        ("end_date", ">=", f.end_gte),
        ("end_date", "<=", f.end_lte),
    ] {
        if let Some(v) = v {
            q.push(format!(" AND {col} {op} ")).push_bind(rows::to_micros(v));
        }
    }
    if let Some(objects) = &f.objects {
        let ids: Vec<String> = objects.iter().map(Uuid::to_string).collect();
        q.push(" AND object_uuid IN (SELECT value FROM json_each(")
            .push_bind(json_list(&ids)?)
            .push("))");
    }
    if let Some(t) = &f.object_type {
        q.push(" AND object_type = ").push_bind(t.clone());
    }
    Ok(())
}

/// Appends the WHERE clause of an object list to `q`.
fn push_object_filter(q: &mut QueryBuilder<'_, Sqlite>, scope: Scope<'_>, f: &ObjectFilter) -> Result<()> {
    q.push(" WHERE 1");
    if let Some(ns) = rows::scope_namespaces(scope) {
        q.push(" AND namespace IN (SELECT value FROM json_each(")
            .push_bind(json_list(&ns)?)
            .push("))");
    }
    if let Some(ns) = &f.namespace {
        q.push(" AND namespace = ").push_bind(ns.clone());
    }
    if let Some(t) = &f.object_type {
        q.push(" AND object_type = ").push_bind(t.clone());
    }
    if let Some(p) = &f.parent {
        q.push(" AND EXISTS (SELECT 1 FROM json_each(objects.parents) WHERE value = ")
            .push_bind(p.clone())
            .push(")");
    }
    if !f.include_deleted {
        q.push(" AND deleted_at IS NULL");
    }
    Ok(())
}

#[async_trait]
impl Database for SqliteStore {
    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn begin_changes(&self) -> Result<Box<dyn Driver>> {
        Ok(Box::new(driver::SqliteDriver {
            tx: self.begin().await?,
            at: now(),
        }))
    }
}

#[async_trait]
impl Tenancy for SqliteStore {
    async fn create_user(&self, name: &str, namespaces: &[String]) -> Result<User> {
        let namespaces = rows::own_namespace_first(name, namespaces);
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO users (name, created_at) VALUES (?1, ?2)")
            .bind(name)
            .bind(rows::to_micros(now()))
            .execute(&mut *tx)
            .await
            .map_err(|e| rows::conflict_if_unique(e, || format!("user {name} already exists")))?;
        for (position, namespace) in namespaces.iter().enumerate() {
            sqlx::query("INSERT INTO memberships (user_name, namespace, position) VALUES (?1, ?2, ?3)")
                .bind(name)
                .bind(namespace)
                .bind(position as i64)
                .execute(&mut *tx)
                .await?;
        }
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
             WHERE u.name = ?1 ORDER BY m.position",
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
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE users SET admin = ?2 WHERE name = ?1")
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
        let id = sqlx::query_scalar(
            "INSERT INTO api_keys (user_name, key_digest, created_at) VALUES (?1, ?2, ?3) RETURNING id",
        )
        .bind(user)
        .bind(key_digest)
        .bind(rows::to_micros(now()))
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
        let keys = sqlx::query("SELECT id, key_digest FROM api_keys WHERE user_name = ?1 ORDER BY id")
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
             WHERE user_name = ?1 ORDER BY id",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::api_key_from_row)
        .collect()
    }

    async fn record_key_use(&self, id: i64) -> Result<()> {
        let at = now();
        sqlx::query(
            "UPDATE api_keys SET last_used_at = ?2 \
             WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?3)",
        )
        .bind(id)
        .bind(rows::to_micros(at))
        .bind(micros_before(at, KEY_USE_PRECISION))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn revoke_api_key(&self, user: &str, id: i64) -> Result<RevokedKey> {
        let mut tx = self.begin().await?;
        let sessions = sqlx::query(
            "DELETE FROM sessions WHERE key_id = ?1 \
               AND key_id IN (SELECT id FROM api_keys WHERE id = ?1 AND user_name = ?2)",
        )
        .bind(id)
        .bind(user)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let digest: Option<String> =
            sqlx::query_scalar("DELETE FROM api_keys WHERE id = ?1 AND user_name = ?2 RETURNING key_digest")
                .bind(id)
                .bind(user)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(digest) = digest else {
            return Err(Error::NotFound(format!("API key {id} of user {user}")));
        };
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
        sqlx::query(
            "INSERT INTO sessions (digest, user_name, key_id, created_at, expires_at) \
             SELECT ?1, ?2, id, ?4, ?5 FROM api_keys WHERE id = ?3 AND user_name = ?2",
        )
        .bind(&session.digest)
        .bind(&session.user)
        .bind(session.key_id)
        .bind(rows::to_micros(now()))
        .bind(rows::to_micros(session.expires_at))
        .execute(&self.pool)
        .await
        .map_err(|e| rows::conflict_if_unique(e, || "session already exists".to_string()))
        .and_then(|done| match done.rows_affected() {
            0 => Err(Error::NotFound(format!(
                "API key {} of user {}",
                session.key_id, session.user
            ))),
            _ => Ok(()),
        })
    }

    async fn session(&self, digest: &str) -> Result<Option<Session>> {
        let row = sqlx::query("SELECT user_name, key_id, expires_at FROM sessions WHERE digest = ?1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let expires_at = row.time("expires_at")?;
        if expires_at <= now() {
            sqlx::query("DELETE FROM sessions WHERE digest = ?1")
                .bind(digest)
                .execute(&self.pool)
                .await?;
            return Ok(None);
        }
        let key_id = row.int("key_id")?;
        let user = self.get_user(&row.text("user_name")?).await?;
        Ok(user.map(|user| Session {
            user,
            key_id,
            expires_at,
        }))
    }

    async fn delete_session(&self, digest: &str) -> Result<Option<String>> {
        let mut tx = self.begin().await?;
        let user: Option<String> =
            sqlx::query_scalar("DELETE FROM sessions WHERE digest = ?1 RETURNING user_name")
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
impl ObjectStore for SqliteStore {
    async fn get_object(&self, scope: Scope<'_>, uuid: Uuid) -> Result<Option<Object>> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM objects WHERE uuid = ?1",
            rows::OBJECT_COLUMNS
        ))
        .bind(uuid.to_string())
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
        let list = List {
            table: "objects",
            columns: rows::OBJECT_COLUMNS,
            large: "attributes",
            order: "created_at, uuid",
        };
        list.page(
            &self.pool,
            |q| push_object_filter(q, scope, filter),
            filter.page_bytes,
            limit,
            offset,
            rows::object_from_row,
        )
        .await
    }

    async fn object_refs(
        &self,
        scope: Scope<'_>,
        filter: &ObjectFilter,
        limit: i64,
    ) -> Result<Vec<(Uuid, String)>> {
        let mut q = QueryBuilder::new("SELECT uuid, resource_uri FROM objects");
        push_object_filter(&mut q, scope, filter)?;
        q.push(" ORDER BY created_at, uuid LIMIT ").push_bind(limit);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| Ok((row.uuid("uuid")?, row.text("resource_uri")?)))
            .collect()
    }
}

#[async_trait]
impl ActionStore for SqliteStore {
    async fn get_action(&self, scope: Scope<'_>, uuid: Uuid) -> Result<Option<Action>> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM actions WHERE uuid = ?1",
            rows::ACTION_COLUMNS
        ))
        .bind(uuid.to_string())
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
        let list = List {
            table: "actions",
            columns: rows::ACTION_COLUMNS,
            large: "body",
            order: "id DESC",
        };
        list.page(
            &self.pool,
            |q| push_action_filter(q, scope, filter),
            filter.page_bytes,
            limit,
            offset,
            |r| Ok(rows::stored_action(r)?.action),
        )
        .await
    }

    async fn queue_places(&self, scope: Scope<'_>, uuids: &[Uuid]) -> Result<HashMap<Uuid, QueuePlace>> {
        if uuids.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<String> = uuids.iter().map(Uuid::to_string).collect();
        let namespaces = rows::scope_namespaces(scope)
            .map(|ns| json_list(&ns))
            .transpose()?;
        let found = sqlx::query(&SQL.queue_places)
            .bind(json_list(&ids)?)
            .bind(namespaces)
            .fetch_all(&self.pool)
            .await?;
        found.iter().map(rows::queue_place).collect()
    }

    async fn unsent_outbox(&self, min_age: Duration, limit: i64) -> Result<Vec<OutboxEntry>> {
        let rows = sqlx::query(
            "SELECT id, action_uuid FROM outbox \
             WHERE sent_at IS NULL AND created_at <= ?1 \
             ORDER BY id LIMIT ?2",
        )
        .bind(micros_before(now(), min_age))
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
        // Deleted, not marked: see the PostgreSQL store.
        sqlx::query("DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?1))")
            .bind(json_list(ids)?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn claim_actions(&self, uuids: &[Uuid], owner: &str, lease: Duration) -> Result<Vec<Claim>> {
        let at = now();
        let mut claims = Vec::with_capacity(uuids.len());
        for uuid in uuids {
            let token = LeaseToken(Uuid::new_v4());
            let row = sqlx::query(&format!(
                "UPDATE actions SET claims = claims + 1, lease_token = ?2, lease_owner = ?3, \
                     lease_expires_at = ?4 \
                 WHERE uuid = ?1 AND state IN (SELECT value FROM json_each(?5)) \
                   AND (lease_token IS NULL OR lease_expires_at < ?6) \
                 RETURNING {}",
                rows::ACTION_COLUMNS
            ))
            .bind(uuid.to_string())
            .bind(token.0.to_string())
            .bind(owner)
            .bind(micros_after(at, lease))
            .bind(json_list(&rows::state_names(
                &stevedore_core::lifecycle::claimable_states(),
            ))?)
            .bind(rows::to_micros(at))
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = row {
                claims.push(Claim {
                    action: rows::stored_action(&row)?.action,
                    token,
                });
            }
        }
        Ok(claims)
    }

    async fn heartbeat(&self, uuid: Uuid, token: LeaseToken, lease: Duration) -> Result<Option<ActionState>> {
        let state: Option<String> = sqlx::query_scalar(
            "UPDATE actions SET lease_expires_at = ?3 WHERE uuid = ?1 AND lease_token = ?2 RETURNING state",
        )
        .bind(uuid.to_string())
        .bind(token.0.to_string())
        .bind(micros_after(now(), lease))
        .fetch_optional(&self.pool)
        .await?;
        state.as_deref().map(rows::parse_state).transpose()
    }

    async fn record_progress(&self, writes: &[ProgressWrite]) -> Result<Vec<StoredAction>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        // One statement: the writes go in as a JSON array, joined by uuid.
        let rows_in: Vec<serde_json::Value> = writes
            .iter()
            .map(|w| {
                serde_json::json!({
                    "uuid": w.uuid.to_string(),
                    "token": w.token.0.to_string(),
                    "progress": w.progress.percent,
                    "message": w.progress.message,
                })
            })
            .collect();
        let rows = sqlx::query(&format!(
            "UPDATE actions SET progress = t.t_progress, progress_message = t.t_message \
             FROM (SELECT json_extract(value, '$.uuid') AS t_uuid, \
                          json_extract(value, '$.token') AS t_token, \
                          json_extract(value, '$.progress') AS t_progress, \
                          json_extract(value, '$.message') AS t_message \
                   FROM json_each(?1)) AS t \
             WHERE actions.uuid = t.t_uuid AND actions.lease_token = t.t_token \
             RETURNING {}",
            rows::ACTION_COLUMNS
        ))
        .bind(serde_json::Value::Array(rows_in).to_string())
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
        let mut tx = self.begin().await?;
        let last: Option<i64> = sqlx::query_scalar(
            "UPDATE actions SET log_seq = log_seq + ?2 \
             WHERE uuid = ?1 AND (?3 IS NULL OR lease_token = ?3) \
             RETURNING log_seq",
        )
        .bind(uuid.to_string())
        .bind(n)
        .bind(token.map(|t| t.0.to_string()))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(last) = last else {
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM actions WHERE uuid = ?1)")
                .bind(uuid.to_string())
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
        // One prepared statement per line: SQLite runs them in-process, so a
        // batch costs no round trips.
        for line in &stored {
            sqlx::query(
                "INSERT INTO action_logs (action_uuid, seq, log, ts, stream) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(uuid.to_string())
            .bind(line.seq)
            .bind(&line.log)
            .bind(line.timestamp)
            .bind(line.stream.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    async fn logs(&self, uuid: Uuid, tail: Option<i64>) -> Result<Vec<LogLine>> {
        // SQLite reads a negative LIMIT as "no limit".
        let limit = tail.map_or(-1, |t| t.max(0));
        let rows = sqlx::query(
            "SELECT action_uuid, seq, log, ts, stream FROM ( \
                 SELECT * FROM action_logs WHERE action_uuid = ?1 ORDER BY seq DESC LIMIT ?2 \
             ) ORDER BY seq",
        )
        .bind(uuid.to_string())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::log_line_from_row).collect()
    }

    async fn logs_after(&self, uuid: Uuid, after: i64, limit: i64) -> Result<Vec<LogLine>> {
        let rows = sqlx::query(
            "SELECT action_uuid, seq, log, ts, stream FROM action_logs \
             WHERE action_uuid = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )
        .bind(uuid.to_string())
        .bind(after)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::log_line_from_row).collect()
    }

    async fn expired_leases(&self, limit: i64) -> Result<Vec<Uuid>> {
        let uuids: Vec<String> = sqlx::query_scalar(
            "SELECT uuid FROM actions WHERE lease_expires_at < ?1 \
             ORDER BY lease_expires_at LIMIT ?2",
        )
        .bind(rows::to_micros(now()))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        uuids.iter().map(|u| rows::parse_uuid(u)).collect()
    }

    async fn redispatch_unclaimed(&self, older_than: Duration, limit: i64) -> Result<Vec<Uuid>> {
        let at = now();
        let uuids: Vec<String> = sqlx::query_scalar(&SQL.redispatch)
            .bind(rows::to_micros(at))
            .bind(micros_before(at, older_than))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        uuids.iter().map(|u| rows::parse_uuid(u)).collect()
    }

    async fn redispatch_actions(&self, uuids: &[Uuid]) -> Result<Vec<Uuid>> {
        let list: Vec<String> = uuids.iter().map(|u| u.to_string()).collect();
        let found: Vec<String> = sqlx::query_scalar(&SQL.redispatch_these)
            .bind(rows::to_micros(now()))
            .bind(json_list(&list)?)
            .fetch_all(&self.pool)
            .await?;
        found.iter().map(|u| rows::parse_uuid(u)).collect()
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn events_after(&self, scope: Scope<'_>, after: i64, limit: i64) -> Result<Vec<Event>> {
        let namespaces = rows::scope_namespaces(scope)
            .map(|ns| json_list(&ns))
            .transpose()?;
        let rows = sqlx::query(&format!(
            "SELECT {} FROM events \
             WHERE seq > ?1 AND (?2 IS NULL OR namespace IN (SELECT value FROM json_each(?2))) \
             ORDER BY seq LIMIT ?3",
            rows::EVENT_COLUMNS
        ))
        .bind(after)
        .bind(namespaces)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::event_from_row).collect()
    }

    async fn poll_events(&self, scope: Scope<'_>, poll: EventPoll, limit: i64) -> Result<Vec<PolledEvent>> {
        let namespaces = rows::scope_namespaces(scope)
            .map(|ns| json_list(&ns))
            .transpose()?;
        let (after, order) = match poll {
            EventPoll::After(seq) => (seq, "seq"),
            EventPoll::Latest => (0, "seq DESC"),
        };
        let rows = sqlx::query(&format!(
            "SELECT e.seq, e.namespace, e.object_type, e.kind, e.uuid, e.resource_uri, e.state, \
                 e.parents, e.datetime, a.user_name AS requester FROM ( \
                 SELECT * FROM events \
                 WHERE seq > ?1 AND (?2 IS NULL OR namespace IN (SELECT value FROM json_each(?2))) \
                 ORDER BY {order} LIMIT ?3 \
             ) e LEFT JOIN actions a ON e.object_type = 'action' AND a.uuid = e.uuid \
             ORDER BY e.seq"
        ))
        .bind(after)
        .bind(namespaces)
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
        let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(seq)
    }
}

#[async_trait]
impl SystemLogStore for SqliteStore {
    async fn system_log(
        &self,
        scope: Scope<'_>,
        f: &SystemLogFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<SystemLogEntry>> {
        let mut q = QueryBuilder::new(
            "SELECT id, ts AS ts_micros, category, level, user_name, message FROM system_log WHERE 1",
        );
        if let Some(ns) = rows::scope_namespaces(scope) {
            q.push(" AND namespace IN (SELECT value FROM json_each(")
                .push_bind(json_list(&ns)?)
                .push("))");
        }
        if let Some(t) = f.time_start {
            q.push(" AND ts >= ").push_bind(t.saturating_mul(1_000_000));
        }
        if let Some(t) = f.time_end {
            q.push(" AND ts < ")
                .push_bind(t.saturating_add(1).saturating_mul(1_000_000));
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
            // instr on lower(): a plain substring test, with no LIKE wildcards to escape.
            q.push(" AND instr(lower(message), lower(")
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
impl Retention for SqliteStore {
    async fn prune(&self, older_than: Duration, max_system_log: i64) -> Result<Pruned> {
        let cutoff = micros_before(now(), older_than);
        let mut tx = self.begin().await?;
        let mut system_log = sqlx::query("DELETE FROM system_log WHERE ts < ?1")
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // Per tenant: each namespace (and the operators' entries, without
        // one) keeps its newest `max_system_log`. `IS` matches NULL too and
        // is served by the (namespace, id) index.
        let tenants: Vec<Option<String>> = sqlx::query_scalar("SELECT DISTINCT namespace FROM system_log")
            .fetch_all(&mut *tx)
            .await?;
        for tenant in tenants {
            system_log += sqlx::query(
                "DELETE FROM system_log WHERE namespace IS ?1 AND id <= \
                 (SELECT id FROM system_log WHERE namespace IS ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )
            .bind(&tenant)
            .bind(max_system_log.max(0))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        let events = sqlx::query("DELETE FROM events WHERE datetime < ?1")
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let finished = json_list(&rows::state_names(&[
            ActionState::Success,
            ActionState::Failed,
            ActionState::Canceled,
        ]))?;
        let old =
            "SELECT uuid FROM actions WHERE state IN (SELECT value FROM json_each(?1)) AND end_date < ?2";
        for table in ["action_logs", "outbox"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE action_uuid IN ({old})"))
                .bind(&finished)
                .bind(cutoff)
                .execute(&mut *tx)
                .await?;
        }
        let actions = sqlx::query(&format!("DELETE FROM actions WHERE uuid IN ({old})"))
            .bind(&finished)
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let sessions = sqlx::query("DELETE FROM sessions WHERE expires_at <= ?1")
            .bind(rows::to_micros(now()))
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

    /// The per-object check and the sweeps must use their partial indexes,
    /// and a guarded write the uuid key, or every submit scans the table.
    #[tokio::test]
    async fn queries_use_their_indexes() {
        let store = SqliteStore::connect("sqlite::memory:").await.expect("connect");
        store.migrate().await.expect("migrate");
        let cases = [
            (SQL.transition.as_str(), &["sqlite_autoindex_actions_1"][..]),
            (SQL.object_busy.as_str(), &["actions_active_by_object"][..]),
            (
                SQL.promote_next.as_str(),
                &["sqlite_autoindex_actions_1", "actions_active_by_object"][..],
            ),
            (SQL.redispatch.as_str(), &["actions_unclaimed_by_dispatch"][..]),
            (SQL.redispatch_these.as_str(), &["sqlite_autoindex_actions_1"][..]),
        ];
        for (sql, indexes) in cases {
            let rows = sqlx::raw_sql(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(store.pool())
                .await
                .expect("EXPLAIN QUERY PLAN");
            let plan = rows
                .iter()
                .map(|r| r.text("detail"))
                .collect::<Result<Vec<_>>>()
                .expect("plan text")
                .join("\n");
            for index in indexes {
                assert!(plan.contains(index), "no {index} for\n{sql}\n{plan}");
            }
        }
    }
}
