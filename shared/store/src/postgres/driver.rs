//! The lifecycle engine's primitives on PostgreSQL ([`Driver`]): each one
//! statement over arrays, whatever the batch's size, so a transaction costs
//! the same few round trips for one action as for a thousand.

use super::{object_lock_key, EVENTS_LOCK, SQL};
use crate::rows::{self, RowExt};
use crate::unnest::unnest_rows;
use async_trait::async_trait;
use sqlx::postgres::Postgres;
use std::collections::{HashMap, HashSet};
use stevedore_core::action::NewAction;
use stevedore_core::lifecycle::{ActionHead, Changeset, Driver, StateUpdate, StoredAction, Written};
use stevedore_core::object::Object;
use stevedore_core::state::ActionState;
use stevedore_core::store::LeaseToken;
use stevedore_core::{Error, Result};
use uuid::Uuid;

unnest_rows! {
    /// New actions ([`Driver::insert_actions`]).
    ActionRows<'a> {
        uuid: Uuid = "uuid",
        namespace: &'a str = "text",
        action: &'a str = "text",
        object: &'a str = "text",
        object_uuid: Uuid = "uuid",
        object_type: &'a str = "text",
        /// JSON text.
        object_parents: String = "text",
        verb: &'a str = "text",
        method: &'a str = "text",
        path: &'a str = "text",
        body: &'a str = "text",
        ip: &'a str = "text",
        location: &'a str = "text",
        user_name: &'a str = "text",
        user_agent: &'a str = "text",
        is_user_action: bool = "bool",
        state: &'a str = "text",
        retry_of: Option<Uuid> = "uuid",
        /// The state is final: the end date is now.
        fin: bool = "bool",
        /// The state is In progress: dispatched now.
        dispatched: bool = "bool",
    }
}

unnest_rows! {
    /// Guarded state changes ([`Driver::update_states`]).
    StateRows<'a> {
        uuid: Uuid = "uuid",
        target: &'a str = "text",
        /// The target's sources, `|`-joined.
        sources: String = "text",
        token: Option<Uuid> = "uuid",
        /// The target is final.
        fin: bool = "bool",
        /// The target is In progress.
        prog: bool = "bool",
    }
}

unnest_rows! {
    /// System log entries of a changeset.
    LogRows<'a> {
        namespace: Option<&'a str> = "text",
        category: &'a str = "text",
        level: &'a str = "text",
        user_name: &'a str = "text",
        message: &'a str = "text",
    }
}

unnest_rows! {
    /// Events of a changeset.
    EventRows<'a> {
        namespace: &'a str = "text",
        object_type: &'a str = "text",
        kind: &'a str = "text",
        uuid: &'a str = "text",
        resource_uri: &'a str = "text",
        state: &'a str = "text",
        /// JSON text.
        parents: String = "text",
    }
}

/// One transaction of the PostgreSQL store, as the engine's [`Driver`].
pub(crate) struct PgDriver {
    pub(crate) tx: sqlx::Transaction<'static, Postgres>,
    /// Objects this transaction holds the lock of.
    locked: HashSet<Uuid>,
    /// Locked objects that [`Driver::update_states`] saw with no action
    /// waiting to be promoted: under the lock none can appear, so
    /// [`Driver::promote`] skips them (most final writes free an object
    /// nothing waits for, and then cost one round trip less).
    nothing_waits: HashSet<Uuid>,
}

impl PgDriver {
    /// The engine's primitives in `tx`.
    pub(crate) fn new(tx: sqlx::Transaction<'static, Postgres>) -> Self {
        PgDriver {
            tx,
            locked: HashSet::new(),
            nothing_waits: HashSet::new(),
        }
    }
}

/// Action rows (a batch statement's `RETURNING`, which keeps no order).
fn stored(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<StoredAction>> {
    rows.iter().map(rows::stored_action).collect()
}

#[async_trait]
impl Driver for PgDriver {
    async fn lock_objects(&mut self, objects: &[Uuid]) -> Result<()> {
        if objects.is_empty() {
            return Ok(());
        }
        let keys: Vec<i64> = objects.iter().map(|o| object_lock_key(*o)).collect();
        sqlx::query(&SQL.lock_objects)
            .bind(&keys)
            .execute(&mut *self.tx)
            .await?;
        self.locked.extend(objects.iter().copied());
        Ok(())
    }

    async fn busy_objects(&mut self, objects: &[Uuid]) -> Result<HashSet<Uuid>> {
        if objects.is_empty() {
            return Ok(HashSet::new());
        }
        Ok(sqlx::query_scalar(&SQL.objects_busy)
            .bind(objects)
            .fetch_all(&mut *self.tx)
            .await?
            .into_iter()
            .collect())
    }

    async fn objects(&mut self, uuids: &[Uuid]) -> Result<Vec<Object>> {
        sqlx::query(&SQL.objects_by_uuid)
            .bind(uuids)
            .fetch_all(&mut *self.tx)
            .await?
            .iter()
            .map(rows::object_from_row)
            .collect()
    }

    async fn actions(&mut self, uuids: &[Uuid], lock: bool) -> Result<Vec<ActionHead>> {
        let sql = if lock {
            &SQL.lock_action_heads
        } else {
            &SQL.action_heads
        };
        sqlx::query(sql)
            .bind(uuids)
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
        let mut rows = ActionRows::default();
        for (n, state) in batch.iter().zip(states) {
            rows.uuid.push(n.uuid);
            rows.namespace.push(&n.namespace);
            rows.action.push(&n.action);
            rows.object.push(&n.object);
            rows.object_uuid.push(n.object_uuid);
            rows.object_type.push(&n.object_type);
            rows.object_parents
                .push(serde_json::to_string(&n.object_parents)?);
            rows.verb.push(&n.verb);
            rows.method.push(&n.method);
            rows.path.push(&n.path);
            rows.body.push(&n.body);
            rows.ip.push(&n.ip);
            rows.location.push(&n.location);
            rows.user_name.push(&n.user);
            rows.user_agent.push(&n.user_agent);
            rows.is_user_action.push(n.is_user_action);
            rows.state.push(state.as_str());
            rows.retry_of.push(n.retry_of);
            rows.fin.push(state.is_final());
            rows.dispatched.push(*state == ActionState::InProgress);
        }
        let found = rows
            .bind(sqlx::query(&SQL.insert_actions))
            .fetch_all(&mut *self.tx)
            .await
            .map_err(|e| rows::conflict_if_unique(e, || "an action of the batch exists".to_string()))?;
        let mut by_uuid: HashMap<Uuid, StoredAction> =
            stored(&found)?.into_iter().map(|s| (s.action.uuid, s)).collect();
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
        let mut rows = StateRows::default();
        for u in updates {
            rows.uuid.push(u.uuid);
            rows.target.push(u.to.as_str());
            rows.sources.push(rows::state_names(u.to.sources()).join("|"));
            rows.token.push(u.token.map(|t| t.0));
            rows.fin.push(u.to.is_final());
            rows.prog.push(u.to == ActionState::InProgress);
        }
        let found = rows
            .bind(sqlx::query(&SQL.update_states))
            .fetch_all(&mut *self.tx)
            .await?;
        let changed = stored(&found)?;
        for (row, s) in found.iter().zip(&changed) {
            let object = s.action.object_uuid;
            if !row.flag("waiting")? && self.locked.contains(&object) {
                self.nothing_waits.insert(object);
            }
        }
        Ok(changed)
    }

    async fn promote(&mut self, objects: &[Uuid]) -> Result<Vec<StoredAction>> {
        let objects: Vec<Uuid> = objects
            .iter()
            .copied()
            .filter(|o| !self.nothing_waits.contains(o))
            .collect();
        if objects.is_empty() {
            return Ok(Vec::new());
        }
        let found = sqlx::query(&SQL.promote)
            .bind(&objects)
            .bind(ActionState::InProgress.as_str())
            .bind(rows::state_names(ActionState::InProgress.sources()))
            .fetch_all(&mut *self.tx)
            .await?;
        stored(&found)
    }

    async fn next_waiting(&mut self, left: &[Uuid]) -> Result<Vec<(Uuid, StoredAction)>> {
        let found = sqlx::query(&SQL.next_waiting)
            .bind(left)
            .fetch_all(&mut *self.tx)
            .await?;
        found
            .iter()
            .map(|row| Ok((row.uuid("left_uuid")?, rows::stored_action(row)?)))
            .collect()
    }

    async fn release(&mut self, uuid: Uuid, token: LeaseToken) -> Result<Option<StoredAction>> {
        sqlx::query(&SQL.release)
            .bind(uuid)
            .bind(token.0)
            .bind(rows::state_names(&stevedore_core::lifecycle::claimable_states()))
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|row| rows::stored_action(&row))
            .transpose()
    }

    async fn insert_object(&mut self, object: &Object) -> Result<()> {
        sqlx::query(
            "INSERT INTO objects (uuid, namespace, object_type, resource_uri, name, state, \
                                  parents, attributes, created_at, updated_at, deleted_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10, $11)",
        )
        .bind(object.uuid)
        .bind(&object.namespace)
        .bind(&object.object_type)
        .bind(&object.resource_uri)
        .bind(&object.name)
        .bind(&object.state)
        .bind(serde_json::to_string(&object.parents)?)
        .bind(serde_json::to_string(&object.attributes)?)
        .bind(object.created_at)
        .bind(object.updated_at)
        .bind(object.deleted_at)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| rows::conflict_if_unique(e, || format!("object {} exists", object.uuid)))?;
        Ok(())
    }

    async fn update_object(&mut self, object: &Object) -> Result<Option<Object>> {
        sqlx::query(&SQL.update_object)
            .bind(object.uuid)
            .bind(&object.name)
            .bind(&object.state)
            .bind(serde_json::to_string(&object.attributes)?)
            .bind(object.deleted_at)
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|row| rows::object_from_row(&row))
            .transpose()
    }

    async fn write(&mut self, changes: Changeset) -> Result<Written> {
        let mut logs = LogRows::default();
        for e in &changes.system_log {
            logs.namespace.push(e.namespace.as_deref());
            logs.category.push(&e.category);
            logs.level.push(e.level.as_str());
            logs.user_name.push(&e.user);
            logs.message.push(&e.message);
        }
        let mut events = EventRows::default();
        for e in &changes.events {
            events.namespace.push(&e.namespace);
            events.object_type.push(&e.object_type);
            events.kind.push(e.action.as_str());
            events.uuid.push(&e.uuid);
            events.resource_uri.push(&e.resource_uri);
            events.state.push(&e.state);
            events.parents.push(serde_json::to_string(&e.parents)?);
        }
        // Parameters in the order `SQL.write` numbers them: the log
        // entries, the outbox rows, the events, the events lock.
        let q = logs.bind(sqlx::query(&SQL.write)).bind(&changes.outbox);
        let found = events
            .bind(q)
            .bind(EVENTS_LOCK.0)
            .bind(EVENTS_LOCK.1)
            .fetch_all(&mut *self.tx)
            .await?;
        let mut written = Written::default();
        let mut stamped: Vec<(i64, chrono::DateTime<chrono::Utc>)> = Vec::with_capacity(changes.events.len());
        let mut logged = 0;
        for row in &found {
            match row.text("kind")?.as_str() {
                "outbox" => {
                    written.outbox.insert(row.uuid("action_uuid")?, row.int("id")?);
                }
                "logs" => logged = row.int("id")?,
                _ => stamped.push((row.int("seq")?, row.time("datetime")?)),
            }
        }
        if logged != changes.system_log.len() as i64 || stamped.len() != changes.events.len() {
            return Err(Error::Internal(format!(
                "{logged} system log entries written of {}, {} events of {}",
                changes.system_log.len(),
                stamped.len(),
                changes.events.len()
            )));
        }
        // RETURNING gives no order: the `seq`s were drawn in input order.
        stamped.sort_by_key(|(seq, _)| *seq);
        written.events = changes.events;
        for (e, (seq, datetime)) in written.events.iter_mut().zip(stamped) {
            e.seq = seq;
            e.datetime = datetime;
        }
        Ok(written)
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}
