//! What the two store backends share: decoding rows into domain values, the
//! state lists their guards are built from, and error mapping.
//!
//! The backends store some types differently (PostgreSQL: `UUID`,
//! `TIMESTAMPTZ`; SQLite: hyphenated `TEXT`, `INTEGER` epoch microseconds), so
//! decoding goes through [`RowExt`], implemented once per row type; everything
//! above it is written once here. JSON columns are read as text on both (the
//! PostgreSQL queries select `col::text`).

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use std::time::Duration;
use stevedore_core::action::{Action, QueuePlace};
use stevedore_core::event::{Event, EventKind};
use stevedore_core::lifecycle::{ActionHead, StoredAction};
use stevedore_core::logline::{LogLine, StreamType};
use stevedore_core::object::Object;
use stevedore_core::state::ActionState;
use stevedore_core::store::LeaseToken;
use stevedore_core::{Error, Result};
use uuid::Uuid;

/// The longest duration a lease, age or deadline is taken to be. Longer ones
/// are clamped: a century is "forever" here, and it keeps `now + d` inside
/// both databases' timestamp ranges.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A duration in microseconds, clamped to [`MAX_DURATION`].
pub(crate) fn duration_micros(d: Duration) -> i64 {
    // MAX_DURATION in microseconds fits an i64 by a wide margin.
    d.min(MAX_DURATION).as_micros() as i64
}

/// Typed column access for the two row types.
pub(crate) trait RowExt {
    /// A `TEXT` column.
    fn text(&self, col: &str) -> Result<String>;
    /// A nullable `TEXT` column.
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    /// A 64-bit integer column.
    fn int(&self, col: &str) -> Result<i64>;
    /// A 32-bit integer column.
    fn int32(&self, col: &str) -> Result<i32>;
    /// A nullable 32-bit integer column.
    fn opt_int32(&self, col: &str) -> Result<Option<i32>>;
    /// A boolean column.
    fn flag(&self, col: &str) -> Result<bool>;
    /// A uuid column.
    fn uuid(&self, col: &str) -> Result<Uuid>;
    /// A nullable uuid column.
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>>;
    /// An instant column.
    fn time(&self, col: &str) -> Result<DateTime<Utc>>;
    /// A nullable instant column.
    fn opt_time(&self, col: &str) -> Result<Option<DateTime<Utc>>>;

    /// A JSON array of strings, stored as text.
    fn strings(&self, col: &str) -> Result<Vec<String>> {
        let text = self.text(col)?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Internal(format!("stored column {col} is not a string list: {e}")))
    }

    /// A JSON value, stored as text.
    fn json(&self, col: &str) -> Result<serde_json::Value> {
        let text = self.text(col)?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Internal(format!("stored column {col} is not JSON: {e}")))
    }

    /// An action state column.
    fn state(&self, col: &str) -> Result<ActionState> {
        parse_state(&self.text(col)?)
    }
}

impl RowExt for PgRow {
    fn text(&self, col: &str) -> Result<String> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        Ok(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> Result<i64> {
        Ok(self.try_get(col)?)
    }
    fn int32(&self, col: &str) -> Result<i32> {
        Ok(self.try_get(col)?)
    }
    fn opt_int32(&self, col: &str) -> Result<Option<i32>> {
        Ok(self.try_get(col)?)
    }
    fn flag(&self, col: &str) -> Result<bool> {
        Ok(self.try_get(col)?)
    }
    fn uuid(&self, col: &str) -> Result<Uuid> {
        Ok(self.try_get(col)?)
    }
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>> {
        Ok(self.try_get(col)?)
    }
    fn time(&self, col: &str) -> Result<DateTime<Utc>> {
        Ok(self.try_get(col)?)
    }
    fn opt_time(&self, col: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(self.try_get(col)?)
    }
}

impl RowExt for SqliteRow {
    fn text(&self, col: &str) -> Result<String> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        Ok(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> Result<i64> {
        Ok(self.try_get(col)?)
    }
    fn int32(&self, col: &str) -> Result<i32> {
        Ok(self.try_get(col)?)
    }
    fn opt_int32(&self, col: &str) -> Result<Option<i32>> {
        Ok(self.try_get(col)?)
    }
    fn flag(&self, col: &str) -> Result<bool> {
        Ok(self.try_get(col)?)
    }
    fn uuid(&self, col: &str) -> Result<Uuid> {
        parse_uuid(&self.text(col)?)
    }
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>> {
        self.opt_text(col)?.as_deref().map(parse_uuid).transpose()
    }
    fn time(&self, col: &str) -> Result<DateTime<Utc>> {
        from_micros(self.int(col)?)
    }
    fn opt_time(&self, col: &str) -> Result<Option<DateTime<Utc>>> {
        let micros: Option<i64> = self.try_get(col)?;
        micros.map(from_micros).transpose()
    }
}

/// Parses a stored uuid.
pub(crate) fn parse_uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| Error::Internal(format!("stored uuid {s:?}: {e}")))
}

/// Parses a stored action state.
pub(crate) fn parse_state(s: &str) -> Result<ActionState> {
    s.parse()
        .map_err(|e| Error::Internal(format!("stored action state: {e}")))
}

/// An instant as epoch microseconds (the SQLite representation).
pub(crate) fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Epoch microseconds as an instant.
pub(crate) fn from_micros(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| Error::Internal(format!("stored instant {micros} is out of range")))
}

// --- state lists -----------------------------------------------------------

/// Wire names of states, to bind as a list parameter.
pub(crate) fn state_names(states: &[ActionState]) -> Vec<&'static str> {
    states.iter().map(|s| s.as_str()).collect()
}

/// States as a SQL literal list: `'Pending', 'In progress'`.
///
/// Only for queries that must match a partial index: a planner can prove that
/// `state IN ('Pending', …)` implies the index predicate only when it sees the
/// values, not a bound parameter. The values are the fixed spellings of
/// [`ActionState::as_str`], never input; quotes are doubled all the same.
pub(crate) fn state_literals(states: &[ActionState]) -> String {
    states
        .iter()
        .map(|s| format!("'{}'", s.as_str().replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ")
}

// --- domain values ---------------------------------------------------------

/// The columns every action query returns, in the names [`StoredAction::from_row`]
/// reads. PostgreSQL needs the JSON column cast to text.
pub(crate) const ACTION_COLUMNS: &str = "uuid, namespace, action, object, object_uuid, \
    object_type, object_parents, verb, method, path, body, ip, location, user_name, \
    user_agent, is_user_action, state, start_date, end_date, retry_of, claims, progress, \
    progress_message";

/// [`ACTION_COLUMNS`] for PostgreSQL.
pub(crate) const PG_ACTION_COLUMNS: &str = "uuid, namespace, action, object, object_uuid, \
    object_type, object_parents::text AS object_parents, verb, method, path, body, ip, \
    location, user_name, user_agent, is_user_action, state, start_date, end_date, \
    retry_of, claims, progress, progress_message";

/// A row of a queue-places query (`uuid`, `position`, `waiting_for`).
pub(crate) fn queue_place(row: &impl RowExt) -> Result<(Uuid, QueuePlace)> {
    Ok((
        row.uuid("uuid")?,
        QueuePlace {
            position: row.int("position")?,
            waiting_for: row.opt_uuid("waiting_for")?,
        },
    ))
}

/// An action's head (what the lifecycle engine decides on) from a row with
/// its state, lease and claim columns and `lease_expired`.
pub(crate) fn action_head(row: &impl RowExt) -> Result<ActionHead> {
    Ok(ActionHead {
        uuid: row.uuid("uuid")?,
        namespace: row.text("namespace")?,
        object_uuid: row.uuid("object_uuid")?,
        state: row.state("state")?,
        lease: row.opt_uuid("lease_token")?.map(LeaseToken),
        lease_expired: row.flag("lease_expired")?,
        claims: row.int32("claims")?,
    })
}

/// Decodes a row of [`ACTION_COLUMNS`].
pub(crate) fn stored_action(row: &impl RowExt) -> Result<StoredAction> {
    Ok(StoredAction {
        action: Action {
            uuid: row.uuid("uuid")?,
            namespace: row.text("namespace")?,
            action: row.text("action")?,
            object: row.text("object")?,
            object_uuid: row.uuid("object_uuid")?,
            object_type: row.text("object_type")?,
            verb: row.text("verb")?,
            method: row.text("method")?,
            path: row.text("path")?,
            body: row.text("body")?,
            ip: row.text("ip")?,
            location: row.text("location")?,
            user: row.text("user_name")?,
            user_agent: row.text("user_agent")?,
            is_user_action: row.flag("is_user_action")?,
            state: row.state("state")?,
            start_date: row.opt_time("start_date")?,
            end_date: row.opt_time("end_date")?,
            retry_of: row.opt_uuid("retry_of")?,
            claims: row.int32("claims")?,
            progress: row
                .opt_int32("progress")?
                .map(|p| u8::try_from(p.clamp(0, 100)).unwrap_or(100)),
            progress_message: row.text("progress_message")?,
        },
        object_parents: row.strings("object_parents")?,
    })
}

/// The columns every object query returns.
pub(crate) const OBJECT_COLUMNS: &str = "uuid, namespace, object_type, resource_uri, name, \
    state, parents, attributes, created_at, updated_at, deleted_at";

/// [`OBJECT_COLUMNS`] for PostgreSQL.
pub(crate) const PG_OBJECT_COLUMNS: &str = "uuid, namespace, object_type, resource_uri, name, \
    state, parents::text AS parents, attributes::text AS attributes, created_at, updated_at, \
    deleted_at";

/// Decodes a row of [`OBJECT_COLUMNS`].
pub(crate) fn object_from_row(row: &impl RowExt) -> Result<Object> {
    Ok(Object {
        uuid: row.uuid("uuid")?,
        namespace: row.text("namespace")?,
        object_type: row.text("object_type")?,
        resource_uri: row.text("resource_uri")?,
        name: row.text("name")?,
        state: row.text("state")?,
        parents: row.strings("parents")?,
        attributes: row.json("attributes")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
        deleted_at: row.opt_time("deleted_at")?,
    })
}

/// The columns every event query returns.
pub(crate) const EVENT_COLUMNS: &str =
    "seq, namespace, object_type, kind, uuid, resource_uri, state, parents, datetime";

/// [`EVENT_COLUMNS`] for PostgreSQL.
pub(crate) const PG_EVENT_COLUMNS: &str = "seq, namespace, object_type, kind, uuid, \
    resource_uri, state, parents::text AS parents, datetime";

/// Decodes a row of [`EVENT_COLUMNS`].
pub(crate) fn event_from_row(row: &impl RowExt) -> Result<Event> {
    let kind = row.text("kind")?;
    Ok(Event {
        object_type: row.text("object_type")?,
        action: EventKind::parse(&kind)
            .ok_or_else(|| Error::Internal(format!("stored event kind {kind:?}")))?,
        uuid: row.text("uuid")?,
        resource_uri: row.text("resource_uri")?,
        state: row.text("state")?,
        parents: row.strings("parents")?,
        datetime: row.time("datetime")?,
        seq: row.int("seq")?,
        namespace: row.text("namespace")?,
    })
}

/// Decodes a row of `action_uuid, seq, log, ts, stream`.
pub(crate) fn log_line_from_row(row: &impl RowExt) -> Result<LogLine> {
    Ok(LogLine {
        action_uuid: row.uuid("action_uuid")?,
        seq: row.int("seq")?,
        log: row.text("log")?,
        timestamp: row.int("ts")?,
        stream: StreamType::parse(&row.text("stream")?),
    })
}

/// A user's namespaces as stored: their own first, then the others in the
/// order given, without duplicates or empty names.
pub(crate) fn own_namespace_first(user: &str, namespaces: &[String]) -> Vec<String> {
    let mut out = vec![user.to_string()];
    for ns in namespaces {
        if !ns.is_empty() && !out.contains(ns) {
            out.push(ns.clone());
        }
    }
    out
}

/// The namespaces a scope restricts reads to, `None` for all.
pub(crate) fn scope_namespaces(scope: stevedore_core::store::Scope<'_>) -> Option<Vec<String>> {
    match scope {
        stevedore_core::store::Scope::All => None,
        stevedore_core::store::Scope::Namespaces(ns) => Some(ns.to_vec()),
    }
}

// --- errors ----------------------------------------------------------------

/// `Error::Conflict(what)` for a unique violation, the database error otherwise.
pub(crate) fn conflict_if_unique(e: sqlx::Error, what: impl FnOnce() -> String) -> Error {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => Error::Conflict(what()),
        _ => Error::Database(e),
    }
}

/// `Error::NotFound(what)` for a foreign key violation, else as [`conflict_if_unique`].
pub(crate) fn not_found_if_dangling(
    e: sqlx::Error,
    what: impl FnOnce() -> String,
    conflict: impl FnOnce() -> String,
) -> Error {
    match &e {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => Error::NotFound(what()),
        _ => conflict_if_unique(e, conflict),
    }
}

/// The error for an action that does not exist or is not visible.
pub(crate) fn action_not_found(uuid: Uuid) -> Error {
    Error::NotFound(format!("action {uuid}"))
}

/// The error for a fenced write whose lease has moved on.
pub(crate) fn lease_lost() -> Error {
    Error::Conflict("lease lost".to_string())
}

/// Decodes a system log row (`id, ts_micros, category, level, user_name, message`).
pub(crate) fn system_log_from_row(row: &impl RowExt) -> Result<stevedore_core::syslog::SystemLogEntry> {
    let level = row.text("level")?;
    let ts_micros = row.int("ts_micros")?;
    Ok(stevedore_core::syslog::SystemLogEntry {
        id: row.int("id")?,
        category: row.text("category")?,
        level: stevedore_core::syslog::LogLevel::parse(&level)
            .ok_or_else(|| Error::Internal(format!("stored log level {level:?}")))?,
        message: row.text("message")?,
        ts: ts_micros.div_euclid(1_000_000),
        user: row.text("user_name")?,
        ts_micros,
    })
}

/// A key as authentication compares it (`id`, `key_digest`).
pub(crate) fn stored_key_from_row(row: &impl RowExt) -> Result<stevedore_core::store::StoredKey> {
    Ok(stevedore_core::store::StoredKey {
        id: row.int("id")?,
        digest: row.text("key_digest")?,
    })
}

/// A key as listings show it (`id`, `key_digest`, `created_at`,
/// `last_used_at`): its digest is cut to a fingerprint here.
pub(crate) fn api_key_from_row(row: &impl RowExt) -> Result<stevedore_core::store::ApiKeyInfo> {
    Ok(stevedore_core::store::ApiKeyInfo {
        id: row.int("id")?,
        fingerprint: stevedore_core::auth::key_fingerprint(&row.text("key_digest")?),
        created_at: row.time("created_at")?,
        last_used_at: row.opt_time("last_used_at")?,
    })
}

/// A worker of the registry (`id`, `host`, `pid`, `version`, `started_at`,
/// `concurrency`, `running` as a JSON array of uuids, `heartbeat_at`,
/// `expires_at`).
pub(crate) fn worker_from_row(row: &impl RowExt) -> Result<stevedore_core::workers::WorkerInfo> {
    use stevedore_core::workers::{NewWorker, WorkerInfo};
    let running = row
        .strings("running")?
        .iter()
        .map(|s| parse_uuid(s))
        .collect::<Result<Vec<_>>>()?;
    Ok(WorkerInfo {
        worker: NewWorker {
            id: row.text("id")?,
            host: row.text("host")?,
            pid: row.int("pid")?,
            version: row.text("version")?,
            started_at: row.time("started_at")?,
            concurrency: row.int("concurrency")?,
        },
        running,
        heartbeat_at: row.time("heartbeat_at")?,
        expires_at: row.time("expires_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_lists_follow_the_state_machine() {
        assert_eq!(
            state_literals(&stevedore_core::lifecycle::active_states()),
            "'Pending', 'In progress', 'Canceling'"
        );
        assert_eq!(
            state_literals(&stevedore_core::lifecycle::holding_states()),
            "'In progress', 'Canceling'"
        );
    }

    #[test]
    fn own_namespace_comes_first_once() {
        let ns = own_namespace_first("ann", &["acme".into(), "ann".into(), "acme".into()]);
        assert_eq!(ns, vec!["ann".to_string(), "acme".to_string()]);
    }

    #[test]
    fn durations_are_clamped() {
        assert_eq!(duration_micros(Duration::from_millis(1500)), 1_500_000);
        assert_eq!(duration_micros(Duration::MAX), duration_micros(MAX_DURATION));
    }
}
