//! The lifecycle engine's primitives on SQLite ([`Driver`]). Its
//! transactions run one at a time (`BEGIN IMMEDIATE` on the one
//! connection: see the store's module docs), so the locks are no-ops and
//! events are numbered in commit order by construction. The database is in
//! the process, so a statement per row costs no round trip.

use super::{json_list, SQL};
use crate::rows;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashSet;
use stevedore_core::action::NewAction;
use stevedore_core::lifecycle::{ActionHead, Changeset, Driver, StateUpdate, StoredAction, Written};
use stevedore_core::object::Object;
use stevedore_core::state::ActionState;
use stevedore_core::store::LeaseToken;
use stevedore_core::{Error, Result};
use uuid::Uuid;

/// One transaction of the SQLite store, as the engine's [`Driver`].
pub(crate) struct SqliteDriver {
    pub(crate) tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    /// The transaction's clock: every row it writes carries this instant.
    pub(crate) at: DateTime<Utc>,
}

/// A new action's row, bound by name: the insert reads each column with
/// `json_extract(value, '$.<field>')`.
#[derive(Serialize)]
struct ActionRow<'a> {
    uuid: String,
    namespace: &'a str,
    action: &'a str,
    object: &'a str,
    object_uuid: String,
    object_type: &'a str,
    /// JSON text.
    object_parents: String,
    verb: &'a str,
    method: &'a str,
    path: &'a str,
    body: &'a str,
    ip: &'a str,
    location: &'a str,
    user_name: &'a str,
    user_agent: &'a str,
    is_user_action: bool,
    state: &'a str,
    retry_of: Option<String>,
    /// The state is final: the end date is now.
    fin: bool,
    /// The state is In progress: dispatched now.
    dispatched: bool,
}

#[async_trait]
impl Driver for SqliteDriver {
    async fn lock_objects(&mut self, _objects: &[Uuid]) -> Result<()> {
        Ok(())
    }

    async fn busy_objects(&mut self, objects: &[Uuid]) -> Result<HashSet<Uuid>> {
        let mut busy = HashSet::new();
        for o in objects {
            let is_busy: bool = sqlx::query_scalar(&SQL.object_busy)
                .bind(o.to_string())
                .fetch_one(&mut *self.tx)
                .await?;
            if is_busy {
                busy.insert(*o);
            }
        }
        Ok(busy)
    }

    async fn objects(&mut self, uuids: &[Uuid]) -> Result<Vec<Object>> {
        let ids: Vec<String> = uuids.iter().map(Uuid::to_string).collect();
        sqlx::query(&format!(
            "SELECT {} FROM objects WHERE uuid IN (SELECT value FROM json_each(?1))",
            rows::OBJECT_COLUMNS
        ))
        .bind(json_list(&ids)?)
        .fetch_all(&mut *self.tx)
        .await?
        .iter()
        .map(rows::object_from_row)
        .collect()
    }

    async fn actions(&mut self, uuids: &[Uuid], _lock: bool) -> Result<Vec<ActionHead>> {
        let ids: Vec<String> = uuids.iter().map(Uuid::to_string).collect();
        sqlx::query(
            "SELECT uuid, namespace, object_uuid, state, lease_token, claims, \
                 COALESCE(lease_expires_at < ?2, 0) AS lease_expired \
             FROM actions WHERE uuid IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_list(&ids)?)
        .bind(rows::to_micros(self.at))
        .fetch_all(&mut *self.tx)
        .await?
        .iter()
        .map(rows::action_head)
        .collect()
    }

    async fn insert_actions(
        &mut self,
        batch: &[NewAction],
        states: &[ActionState],
    ) -> Result<Vec<StoredAction>> {
        let rows: Vec<ActionRow> = batch
            .iter()
            .zip(states)
            .map(|(n, state)| {
                Ok(ActionRow {
                    uuid: n.uuid.to_string(),
                    namespace: &n.namespace,
                    action: &n.action,
                    object: &n.object,
                    object_uuid: n.object_uuid.to_string(),
                    object_type: &n.object_type,
                    object_parents: serde_json::to_string(&n.object_parents)?,
                    verb: &n.verb,
                    method: &n.method,
                    path: &n.path,
                    body: &n.body,
                    ip: &n.ip,
                    location: &n.location,
                    user_name: &n.user,
                    user_agent: &n.user_agent,
                    is_user_action: n.is_user_action,
                    state: state.as_str(),
                    retry_of: n.retry_of.map(|u| u.to_string()),
                    fin: state.is_final(),
                    dispatched: *state == ActionState::InProgress,
                })
            })
            .collect::<Result<_>>()?;
        let found = sqlx::query(&SQL.insert_actions)
            .bind(serde_json::to_string(&rows)?)
            .bind(rows::to_micros(self.at))
            .fetch_all(&mut *self.tx)
            .await
            .map_err(|e| rows::conflict_if_unique(e, || "an action of the batch exists".to_string()))?;
        let mut by_uuid: std::collections::HashMap<Uuid, StoredAction> = found
            .iter()
            .map(|row| {
                let s = rows::stored_action(row)?;
                Ok((s.action.uuid, s))
            })
            .collect::<Result<_>>()?;
        batch
            .iter()
            .map(|n| {
                by_uuid
                    .remove(&n.uuid)
                    .ok_or_else(|| Error::Internal(format!("action {} was not stored", n.uuid)))
            })
            .collect()
    }

    async fn update_states(&mut self, updates: &[StateUpdate]) -> Result<Vec<StoredAction>> {
        let mut changed = Vec::with_capacity(updates.len());
        for u in updates {
            let row = sqlx::query(&SQL.transition)
                .bind(u.uuid.to_string())
                .bind(u.to.as_str())
                .bind(json_list(&rows::state_names(u.to.sources()))?)
                .bind(u.token.map(|t| t.0.to_string()))
                .bind(u.to.is_final())
                .bind(u.to == ActionState::InProgress)
                .bind(rows::to_micros(self.at))
                .fetch_optional(&mut *self.tx)
                .await?;
            if let Some(row) = row {
                changed.push(rows::stored_action(&row)?);
            }
        }
        Ok(changed)
    }

    async fn promote(&mut self, objects: &[Uuid]) -> Result<Vec<StoredAction>> {
        let mut promoted = Vec::new();
        for o in objects {
            let row = sqlx::query(&SQL.promote_next)
                .bind(o.to_string())
                .bind(ActionState::InProgress.as_str())
                .bind(rows::to_micros(self.at))
                .fetch_optional(&mut *self.tx)
                .await?;
            if let Some(row) = row {
                promoted.push(rows::stored_action(&row)?);
            }
        }
        Ok(promoted)
    }

    async fn next_waiting(&mut self, left: &[Uuid]) -> Result<Vec<(Uuid, StoredAction)>> {
        let mut found = Vec::new();
        for l in left {
            let row = sqlx::query(&SQL.next_waiting)
                .bind(l.to_string())
                .fetch_optional(&mut *self.tx)
                .await?;
            if let Some(row) = row {
                found.push((*l, rows::stored_action(&row)?));
            }
        }
        Ok(found)
    }

    async fn release(&mut self, uuid: Uuid, token: LeaseToken) -> Result<Option<StoredAction>> {
        sqlx::query(&format!(
            "UPDATE actions SET lease_token = NULL, lease_owner = NULL, \
                 lease_expires_at = NULL, dispatched_at = ?3 \
             WHERE uuid = ?1 AND lease_token = ?2 \
               AND state IN (SELECT value FROM json_each(?4)) RETURNING {}",
            rows::ACTION_COLUMNS
        ))
        .bind(uuid.to_string())
        .bind(token.0.to_string())
        .bind(rows::to_micros(self.at))
        .bind(json_list(&rows::state_names(
            &stevedore_core::lifecycle::claimable_states(),
        ))?)
        .fetch_optional(&mut *self.tx)
        .await?
        .map(|row| rows::stored_action(&row))
        .transpose()
    }

    async fn insert_object(&mut self, object: &Object) -> Result<()> {
        sqlx::query(
            "INSERT INTO objects (uuid, namespace, object_type, resource_uri, name, state, \
                                  parents, attributes, created_at, updated_at, deleted_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .bind(object.uuid.to_string())
        .bind(&object.namespace)
        .bind(&object.object_type)
        .bind(&object.resource_uri)
        .bind(&object.name)
        .bind(&object.state)
        .bind(serde_json::to_string(&object.parents)?)
        .bind(serde_json::to_string(&object.attributes)?)
        .bind(rows::to_micros(object.created_at))
        .bind(rows::to_micros(object.updated_at))
        .bind(object.deleted_at.map(rows::to_micros))
        .execute(&mut *self.tx)
        .await
        .map_err(|e| rows::conflict_if_unique(e, || format!("object {} exists", object.uuid)))?;
        Ok(())
    }

    async fn update_object(&mut self, object: &Object) -> Result<Option<Object>> {
        sqlx::query(&format!(
            "UPDATE objects SET name = ?2, state = ?3, attributes = ?4, deleted_at = ?5, updated_at = ?6 \
             WHERE uuid = ?1 AND deleted_at IS NULL \
             RETURNING {}",
            rows::OBJECT_COLUMNS
        ))
        .bind(object.uuid.to_string())
        .bind(&object.name)
        .bind(&object.state)
        .bind(serde_json::to_string(&object.attributes)?)
        .bind(object.deleted_at.map(rows::to_micros))
        .bind(rows::to_micros(self.at))
        .fetch_optional(&mut *self.tx)
        .await?
        .map(|row| rows::object_from_row(&row))
        .transpose()
    }

    async fn write(&mut self, changes: Changeset) -> Result<Written> {
        let at = rows::to_micros(self.at);
        for e in &changes.system_log {
            sqlx::query(
                "INSERT INTO system_log (ts, namespace, category, level, user_name, message) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(at)
            .bind(&e.namespace)
            .bind(&e.category)
            .bind(e.level.as_str())
            .bind(&e.user)
            .bind(&e.message)
            .execute(&mut *self.tx)
            .await?;
        }
        let mut written = Written::default();
        for a in &changes.outbox {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO outbox (action_uuid, created_at) VALUES (?1, ?2) RETURNING id",
            )
            .bind(a.to_string())
            .bind(at)
            .fetch_one(&mut *self.tx)
            .await?;
            written.outbox.insert(*a, id);
        }
        for mut e in changes.events {
            let seq: i64 = sqlx::query_scalar(
                "INSERT INTO events (namespace, object_type, kind, uuid, resource_uri, state, parents, datetime) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING seq",
            )
            .bind(&e.namespace)
            .bind(&e.object_type)
            .bind(e.action.as_str())
            .bind(&e.uuid)
            .bind(&e.resource_uri)
            .bind(&e.state)
            .bind(serde_json::to_string(&e.parents)?)
            .bind(at)
            .fetch_one(&mut *self.tx)
            .await?;
            e.seq = seq;
            e.datetime = self.at;
            written.events.push(e);
        }
        Ok(written)
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}
