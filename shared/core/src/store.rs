//! The `Store`: everything Stevedore keeps, behind one trait per area, with
//! two drivers in the `stevedore-store` crate — PostgreSQL for production and
//! SQLite for `stevedore dev` — that pass one conformance suite
//! (`shared/store/tests/conformance.rs`).
//!
//! **Invariant:** the database is the source of truth. A state change, its
//! event and (when work must be dispatched) its outbox row are written in one
//! transaction.
//!
//! **Invariant:** every state write is guarded by
//! [`ActionState::sources`](crate::state::ActionState::sources), and every
//! worker write by its lease token, so a stale or duplicate writer changes
//! nothing.

pub use crate::lifecycle::requests::{
    lookups_of, Claim, Finish, LeaseToken, ObjectLookup, Reaped, ResolvedBatch, Scope, Submission, Submitted,
    Transitioned,
};

use crate::action::{Action, NewAction, QueuePlace};
use crate::event::Event;
use crate::lifecycle::engine::{self, ObjectChanged, ObjectRequest, Target, TransitionRequest};
use crate::lifecycle::{Driver, StoredAction};
use crate::logline::{LogLine, NewLogLine};
use crate::object::Object;
use crate::progress::ProgressWrite;
use crate::session::{NewSession, Session};
use crate::state::ActionState;
use crate::syslog::{NewSystemLog, Pruned, SystemLogEntry, SystemLogFilter};
use crate::webhook::{Attempt, Delivery, DueDelivery, NewDelivery, NewWebhook, Webhook, WebhookTarget};
use crate::workers::{NewWorker, WorkerInfo};
use crate::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// A row of the outbox: a job committed but not yet confirmed by the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Row id.
    pub id: i64,
    /// The action to dispatch.
    pub action_uuid: Uuid,
}

/// A user with the namespaces they belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Namespaces (organisations) they belong to; the first is their own.
    pub namespaces: Vec<String>,
    /// An operator: may see what spans tenants (the workers registry).
    /// Granted and revoked with `stevedore user grant-admin|revoke-admin`.
    pub admin: bool,
}

/// A stored API key as authentication compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The key's id (what `stevedore apikey revoke` names).
    pub id: i64,
    /// The SHA-256 digest of the key, in hex.
    pub digest: String,
}

impl AsRef<str> for StoredKey {
    fn as_ref(&self) -> &str {
        &self.digest
    }
}

/// An API key as listings show it: never the key, nor its whole digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    /// The key's id.
    pub id: i64,
    /// The first characters of its digest ([`crate::auth::key_fingerprint`]).
    pub fingerprint: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last verified by an API or stream process (to within
    /// [`KEY_USE_PRECISION`]), if ever.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// What revoking a key ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedKey {
    /// The revoked key's fingerprint.
    pub fingerprint: String,
    /// How many sessions made from it ended with it.
    pub sessions: u64,
}

/// A key's last use is written at most once per this time: recording it
/// costs one write per key and minute, not one per request.
pub const KEY_USE_PRECISION: Duration = Duration::from_secs(60);

/// The filters of the audit API's action list. Fields left empty do not filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActionFilter {
    /// Exactly this action.
    pub uuid: Option<Uuid>,
    /// Actions whose uuid starts with this lowercase prefix of the hyphenated
    /// form (at most 36 characters of `[0-9a-f-]`; see [`uuid_prefix_range`]).
    pub uuid_prefix: Option<String>,
    /// Any of these states.
    pub states: Vec<ActionState>,
    /// `start_date >= …`
    pub start_gte: Option<DateTime<Utc>>,
    /// `start_date <= …`
    pub start_lte: Option<DateTime<Utc>>,
    /// `end_date >= …`
    pub end_gte: Option<DateTime<Utc>>,
    /// `end_date <= …`
    pub end_lte: Option<DateTime<Utc>>,
    /// Actions on any of these objects (`Some(vec![])` matches nothing).
    pub objects: Option<Vec<Uuid>>,
    /// Only this namespace (on top of the caller's scope).
    pub namespace: Option<String>,
    /// Only actions on objects of this type (`service`, …).
    pub object_type: Option<String>,
    /// Not a filter: the page's byte budget (see [`rows_within_budget`]).
    pub page_bytes: Option<usize>,
}

/// The inclusive uuid range a prefix of the hyphenated form covers, as two
/// full uuids: `"7eaf7f"` → `7eaf7f00-0000-…` ..= `7eaf7fff-ffff-…`. A range
/// (unlike `LIKE`) is served by the primary key. `None` for an invalid prefix.
pub fn uuid_prefix_range(prefix: &str) -> Option<(Uuid, Uuid)> {
    const TEMPLATE: &[u8] = b"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
    let p = prefix.as_bytes();
    if p.len() > TEMPLATE.len() {
        return None;
    }
    for (i, &c) in p.iter().enumerate() {
        let ok = if TEMPLATE[i] == b'-' {
            c == b'-'
        } else {
            c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
        };
        if !ok {
            return None;
        }
    }
    let fill = |pad: u8| -> String {
        TEMPLATE
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                if i < p.len() {
                    p[i] as char
                } else if t == b'-' {
                    '-'
                } else {
                    pad as char
                }
            })
            .collect()
    };
    Some((
        Uuid::parse_str(&fill(b'0')).ok()?,
        Uuid::parse_str(&fill(b'f')).ok()?,
    ))
}

/// The filters of an object list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectFilter {
    /// Only this type.
    pub object_type: Option<String>,
    /// Only this namespace (on top of the caller's scope).
    pub namespace: Option<String>,
    /// Only objects whose parents include this resource URI.
    pub parent: Option<String>,
    /// Include deleted (terminated) objects.
    pub include_deleted: bool,
    /// Not a filter: the page's byte budget (see [`rows_within_budget`]).
    pub page_bytes: Option<usize>,
}

/// What a listed row counts for besides its one large column (an action's
/// body, an object's attributes): its other fields and their JSON keys.
pub const ROW_OVERHEAD: usize = 1024;

/// The one rule for a page's byte budget: how many of a page's rows, given
/// the sizes of their large column in order, fit in `budget` bytes (each
/// also counted [`ROW_OVERHEAD`]). Never fewer than one of the rows given,
/// so paging always moves on; a row larger than the budget is a page alone.
pub fn rows_within_budget(sizes: impl IntoIterator<Item = i64>, budget: usize) -> i64 {
    let mut used: usize = 0;
    let mut n = 0;
    for size in sizes {
        used = used.saturating_add(usize::try_from(size.max(0)).unwrap_or(usize::MAX) + ROW_OVERHEAD);
        if n > 0 && used > budget {
            break;
        }
        n += 1;
    }
    n
}

/// Which events a poll of the QNAP event API reads ([`EventStore::poll_events`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventPoll {
    /// Those with `seq` above this, oldest first.
    After(i64),
    /// The newest ones, returned oldest first.
    Latest,
}

/// An event with the user who requested its action (`None` for an object's
/// event, or an action no longer stored).
#[derive(Debug, Clone, PartialEq)]
pub struct PolledEvent {
    /// The event.
    pub event: Event,
    /// Its action's requester.
    pub user: Option<String>,
}

/// One page of a list, with the number of matches over all pages.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// How many items match in all. PostgreSQL counts exactly up to 10,000
    /// matches and estimates beyond; it is never less than `offset` plus this
    /// page plus one when another page follows, so paging by it is exact.
    pub total: i64,
}

/// The persistence interface, the sum of one trait per area. See the
/// module docs for the invariants every implementation keeps.
pub trait Store:
    Database
    + Tenancy
    + ObjectStore
    + ActionStore
    + EventStore
    + SystemLogStore
    + Retention
    + WorkerRegistry
    + WebhookStore
    + 'static
{
}

impl<T> Store for T where
    T: Database
        + Tenancy
        + ObjectStore
        + ActionStore
        + EventStore
        + SystemLogStore
        + Retention
        + WorkerRegistry
        + WebhookStore
        + 'static
{
}

/// The database itself: migrations, liveness, and the transactions of the
/// lifecycle engine.
#[async_trait]
pub trait Database: Send + Sync {
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<()>;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<()>;

    /// How many batch transactions of one process ([`crate::group_commit`])
    /// should be in flight at once: one for a database that commits one
    /// writer at a time, more where each keeps a database backend busy.
    fn batch_lanes(&self) -> usize {
        1
    }

    /// Opens a transaction for the lifecycle engine: the primitives it
    /// needs ([`Driver`]), committed by [`Driver::commit`] and rolled back
    /// when dropped.
    async fn begin_changes(&self) -> Result<Box<dyn Driver>>;
}

/// Users, their API keys and the dashboard's sessions.
#[async_trait]
pub trait Tenancy: Send + Sync {
    /// Creates a user who belongs to `namespaces` (their own namespace, named
    /// like the user, is always added first). `Error::Conflict` if the user exists.
    async fn create_user(&self, name: &str, namespaces: &[String]) -> Result<User>;

    /// Looks a user up.
    async fn get_user(&self, name: &str) -> Result<Option<User>>;

    /// Grants (`true`) or revokes (`false`) a user's admin flag and advances
    /// the [credential revision](Tenancy::credential_revision), in one
    /// transaction, so processes that cached the user's credentials notice.
    /// `Error::NotFound` when there is no such user.
    async fn set_admin(&self, name: &str, admin: bool) -> Result<()>;

    /// Stores an API key digest for an existing user (`Error::NotFound`
    /// otherwise) and returns the key's id. Ids are never reused.
    async fn add_api_key(&self, user: &str, key_digest: &str) -> Result<i64>;

    /// The user and their keys (oldest first), for authentication. Does the
    /// same work for an unknown user as for a known one, so that the time of
    /// an answer does not tell whether a user name exists.
    async fn credentials(&self, user: &str) -> Result<Option<(User, Vec<StoredKey>)>>;

    /// A user's keys, oldest first, as listings show them. `Error::NotFound`
    /// when there is no such user.
    async fn api_keys(&self, user: &str) -> Result<Vec<ApiKeyInfo>>;

    /// Records that key `id` was just verified; written only when the
    /// recorded use is older than [`KEY_USE_PRECISION`].
    async fn record_key_use(&self, id: i64) -> Result<()>;

    /// Revokes key `id` of `user`: deletes it and every session made from
    /// it, and advances the [credential revision](Tenancy::credential_revision),
    /// in one transaction. `Error::NotFound` when the user has no such key.
    async fn revoke_api_key(&self, user: &str, id: i64) -> Result<RevokedKey>;

    /// A number that grows whenever a key is revoked or a session deleted,
    /// so that a process which cannot be told (see the API's
    /// `revocation` module) notices by reading it.
    async fn credential_revision(&self) -> Result<i64>;

    /// Stores a session. `Error::NotFound` when its user or key is gone
    /// (a key revoked meanwhile).
    async fn create_session(&self, session: &NewSession) -> Result<()>;

    /// The live session with this digest: `None` when there is none or it
    /// has expired (an expired one is deleted).
    async fn session(&self, digest: &str) -> Result<Option<Session>>;

    /// Deletes a session (logout) and advances the credential revision.
    /// Returns whose it was, `None` when there was none.
    async fn delete_session(&self, digest: &str) -> Result<Option<String>>;
}

/// Objects (services, nodes, …): their reads here; every change goes
/// through the lifecycle engine with the action that records it.
#[async_trait]
pub trait ObjectStore: Database {
    /// An object by uuid, if visible in `scope` (deleted objects included).
    async fn get_object(&self, scope: Scope<'_>, uuid: Uuid) -> Result<Option<Object>>;

    /// Objects matching `filter` in `scope`, oldest first.
    async fn list_objects(
        &self,
        scope: Scope<'_>,
        filter: &ObjectFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Page<Object>>;

    /// The uuid and resource URI of at most `limit` objects matching
    /// `filter` in `scope`, oldest first: what a relation needs, without the
    /// objects' attributes.
    async fn object_refs(
        &self,
        scope: Scope<'_>,
        filter: &ObjectFilter,
        limit: i64,
    ) -> Result<Vec<(Uuid, String)>>;

    /// Makes an object change — the object, its event, its system log
    /// entry and its action, in one transaction
    /// ([`engine::change_object`]).
    async fn change_object(&self, request: ObjectRequest) -> Result<ObjectChanged> {
        let mut tx = self.begin_changes().await?;
        let changed = engine::change_object(&mut *tx, request).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// Stores a new object with its `create` event and no action (imports
    /// and fixtures; requests use [`ObjectStore::change_object`]).
    async fn insert_object(&self, object: &Object) -> Result<Event> {
        let mut tx = self.begin_changes().await?;
        let event = engine::insert_object(&mut *tx, object).await?;
        tx.commit().await?;
        Ok(event)
    }
}

/// Actions: their lifecycle (through the engine), their leases, their logs
/// and their outbox.
#[async_trait]
pub trait ActionStore: Database {
    /// Records submissions in ONE transaction (group commit: one commit,
    /// one hold of the events lock, for the whole batch), in order: an
    /// action whose object is free starts In progress with an outbox row,
    /// a later one on an object an earlier one (or one already stored)
    /// occupies is Pending, one given as `completed` is recorded in that
    /// final state ([`crate::lifecycle::initial_states`]). Objects named
    /// only by uuid ([`Submission::lookup`]) are looked up in the same
    /// transaction; one not found or terminated is that submission's own
    /// error ([`ObjectLookup::resolve`]). `Err` only when the batch as a
    /// whole failed (nothing recorded).
    async fn submit_batch(&self, batch: &[Submission]) -> Result<Vec<Result<Submitted>>> {
        let mut tx = self.begin_changes().await?;
        let out = engine::submit(&mut *tx, batch).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// [`ActionStore::submit_batch`] of actions whose objects the caller
    /// resolved: all or nothing.
    async fn submit_actions(&self, batch: &[NewAction]) -> Result<Vec<Submitted>> {
        let batch: Vec<Submission> = batch
            .iter()
            .map(|a| Submission {
                action: a.clone(),
                lookup: None,
            })
            .collect();
        self.submit_batch(&batch).await?.into_iter().collect()
    }

    /// [`ActionStore::submit_actions`] of one action.
    async fn submit_action(&self, new: NewAction) -> Result<Submitted> {
        self.submit_actions(std::slice::from_ref(&new))
            .await?
            .pop()
            .ok_or_else(|| crate::Error::Internal("the submission was not recorded".into()))
    }

    /// An action by uuid, if visible in `scope`.
    async fn get_action(&self, scope: Scope<'_>, uuid: Uuid) -> Result<Option<Action>>;

    /// Actions matching `filter` in `scope`, newest first.
    async fn list_actions(
        &self,
        scope: Scope<'_>,
        filter: &ActionFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Page<Action>>;

    /// The queue places ([`QueuePlace`]) of those of `uuids` that are
    /// Pending and visible in `scope`, by uuid (the others are left out):
    /// for a page of a list or one action, in one statement over the
    /// partial index of unfinished actions, whatever the objects' history.
    async fn queue_places(&self, scope: Scope<'_>, uuids: &[Uuid]) -> Result<HashMap<Uuid, QueuePlace>>;

    /// Outbox rows not marked sent and created at least `min_age` ago, oldest
    /// first, at most `limit`.
    async fn unsent_outbox(&self, min_age: Duration, limit: i64) -> Result<Vec<OutboxEntry>>;

    /// Marks outbox rows as sent (published and confirmed): they are
    /// deleted, as the relay needs only the unsent ones. Idempotent.
    async fn mark_outbox_sent(&self, ids: &[i64]) -> Result<()>;

    /// Claims In progress (or Canceling: the worker then stops them at once)
    /// actions — one job message's — for `owner` with a lease of `lease`,
    /// each with its own lease token, where the action has no lease or its
    /// lease has expired. Increments `claims`. Returns the claims made, in
    /// the order of `uuids`; the others were missing, in another state, or
    /// leased by someone else.
    async fn claim_actions(&self, uuids: &[Uuid], owner: &str, lease: Duration) -> Result<Vec<Claim>>;

    /// [`ActionStore::claim_actions`] of one action.
    async fn claim_action(&self, uuid: Uuid, owner: &str, lease: Duration) -> Result<Option<Claim>> {
        Ok(self.claim_actions(&[uuid], owner, lease).await?.pop())
    }

    /// Extends a lease and returns the action's current state, so that a
    /// worker notices a cancel (Canceling) even when the control message was
    /// lost; `None` when the token no longer holds the action.
    async fn heartbeat(&self, uuid: Uuid, token: LeaseToken, lease: Duration) -> Result<Option<ActionState>>;

    /// Writes the latest progress of several actions in ONE statement (a
    /// worker's coalesced flush, [`crate::progress`]), each fenced by its
    /// lease token. Returns the actions written, as they are now, in no
    /// particular order; one whose token no longer holds it is left out.
    async fn record_progress(&self, writes: &[ProgressWrite]) -> Result<Vec<StoredAction>>;

    /// Appends lines to an action's log and numbers them (per action, from 1,
    /// without gaps), returning them as stored. With `Some(token)` the write is
    /// fenced (`Error::Conflict` if the lease moved on).
    async fn append_logs(
        &self,
        uuid: Uuid,
        token: Option<LeaseToken>,
        lines: &[NewLogLine],
    ) -> Result<Vec<LogLine>>;

    /// The last `tail` lines of an action's log (all with `None`), in order.
    async fn logs(&self, uuid: Uuid, tail: Option<i64>) -> Result<Vec<LogLine>>;

    /// At most `limit` lines of an action's log with `seq > after`, in
    /// order: a long log read page by page.
    async fn logs_after(&self, uuid: Uuid, after: i64, limit: i64) -> Result<Vec<LogLine>>;

    /// Moves an action to `to` under the rules of [`crate::state`], with its
    /// `update` event ([`engine::transition`]). With `Some(token)` the write
    /// is fenced by the lease. A final state sets `end_date`, clears the
    /// lease, and promotes the oldest Pending action on the same object
    /// (when no other action there is In progress or Canceling). Errors:
    /// `NotFound`, or `Transition` when the current state does not allow it
    /// (or the token does not hold the lease).
    async fn transition(
        &self,
        scope: Scope<'_>,
        uuid: Uuid,
        to: ActionState,
        token: Option<LeaseToken>,
    ) -> Result<Transitioned> {
        let request = TransitionRequest {
            uuid,
            target: Target::State(to),
            token,
        };
        self.transitions(scope, &[request])
            .await?
            .pop()
            .unwrap_or_else(|| Err(not_recorded()))
    }

    /// Cancels an action: a Pending one is Canceled at once, an In progress
    /// one becomes Canceling ([`crate::lifecycle::cancel_target`]), decided
    /// under the locks, so a race with a finishing worker ends in a
    /// conflict, never in two final states.
    async fn cancel(&self, scope: Scope<'_>, uuid: Uuid) -> Result<Transitioned> {
        let request = TransitionRequest {
            uuid,
            target: Target::Cancel,
            token: None,
        };
        self.transitions(scope, &[request])
            .await?
            .pop()
            .unwrap_or_else(|| Err(not_recorded()))
    }

    /// Workers' final writes ([`ActionStore::transition`] under their leases,
    /// scope: all), each with its own outcome, in one commit (group commit).
    /// An `Err` of the whole call means nothing was written.
    async fn transition_many(&self, batch: &[Finish]) -> Result<Vec<Result<Transitioned>>> {
        let requests: Vec<TransitionRequest> = batch
            .iter()
            .map(|f| TransitionRequest {
                uuid: f.uuid,
                target: Target::State(f.to),
                token: Some(f.token),
            })
            .collect();
        self.transitions(Scope::All, &requests).await
    }

    /// The one path of every state change ([`engine::transition`]).
    async fn transitions(
        &self,
        scope: Scope<'_>,
        requests: &[TransitionRequest],
    ) -> Result<Vec<Result<Transitioned>>> {
        let mut tx = self.begin_changes().await?;
        let out = engine::transition(&mut *tx, scope, requests).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Up to `limit` running actions whose lease has expired, oldest expiry first.
    async fn expired_leases(&self, limit: i64) -> Result<Vec<Uuid>>;

    /// Deals with expired leases ([`crate::lifecycle::on_expired_lease`]): an
    /// action whose `claims` is below `max_claims` gets a new outbox row (its
    /// state stays In progress, or Canceling → it is set Canceled); one that
    /// reached `max_claims` is set Failed. One transaction per action, so a
    /// failure costs one action.
    async fn reap_expired_leases(&self, max_claims: i32, limit: i64) -> Result<Reaped> {
        let mut reaped = Reaped::default();
        for uuid in self.expired_leases(limit).await? {
            let mut tx = self.begin_changes().await?;
            let outcome = engine::reap(&mut *tx, uuid, max_claims).await?;
            tx.commit().await?;
            match outcome {
                Some(engine::Expired::Requeued(s)) => reaped.requeued.push(*s),
                Some(engine::Expired::Ended(t)) => reaped.failed.push(*t),
                None => {}
            }
        }
        Ok(reaped)
    }

    /// Gives a leased In progress (or Canceling) action back at once, as a
    /// worker that shuts down does with what it could not finish: the lease
    /// is cleared (only if `token` still holds it) and an outbox row and an
    /// `update` event are recorded in the same transaction, so another worker
    /// can claim it without waiting for the lease to expire. `None` when the
    /// token no longer holds the action (it finished, or was reaped).
    async fn release_lease(&self, uuid: Uuid, token: LeaseToken) -> Result<Option<Submitted>> {
        let mut tx = self.begin_changes().await?;
        let handed = engine::hand_back(&mut *tx, uuid, token).await?;
        tx.commit().await?;
        Ok(handed)
    }

    /// In progress or Canceling actions with no lease whose last dispatch is older than
    /// `older_than`: their dispatch time is reset and their uuids returned, to
    /// be published again (a confirmed message the broker lost).
    async fn redispatch_unclaimed(&self, older_than: Duration, limit: i64) -> Result<Vec<Uuid>>;

    /// Of `uuids`, the actions that wait for a worker (In progress or
    /// Canceling, with no lease): their dispatch time is reset and their
    /// uuids returned, to be published again. The others — missing, final,
    /// Pending, or leased (a live worker has it, or the reaper will) — are
    /// left out.
    async fn redispatch_actions(&self, uuids: &[Uuid]) -> Result<Vec<Uuid>>;
}

/// The events the streams serve.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Events with `seq > after`, in `scope`, oldest first, at most `limit`.
    async fn events_after(&self, scope: Scope<'_>, after: i64, limit: i64) -> Result<Vec<Event>>;

    /// At most `limit` events in `scope` (after a sequence number, or the
    /// newest), oldest first, each with its action's requester: one
    /// statement, however many events and actions it covers.
    async fn poll_events(&self, scope: Scope<'_>, poll: EventPoll, limit: i64) -> Result<Vec<PolledEvent>>;

    /// The highest event sequence number stored (0 when there is none): where
    /// a stream client that gave no resume point starts from.
    async fn last_event_seq(&self) -> Result<i64>;
}

/// The QNAP-style system log.
#[async_trait]
pub trait SystemLogStore: Database {
    /// Writes system log entries (the lifecycle engine writes those of the
    /// changes it makes in their own transactions).
    async fn append_system_log(&self, entries: &[NewSystemLog]) -> Result<()> {
        let changes = crate::lifecycle::Changeset {
            system_log: entries.to_vec(),
            ..Default::default()
        };
        let mut tx = self.begin_changes().await?;
        tx.write(changes).await?;
        tx.commit().await
    }

    /// System log entries matching `filter` in `scope`, newest first. An
    /// entry without a namespace is visible only in `Scope::All`.
    async fn system_log(
        &self,
        scope: Scope<'_>,
        filter: &SystemLogFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<SystemLogEntry>>;
}

/// Retention of old history.
#[async_trait]
pub trait Retention: Send + Sync {
    /// Retention: deletes system log entries and events older than
    /// `older_than`, system log entries beyond the newest `max_system_log` of
    /// their tenant (each namespace, and the operators-only entries, keep
    /// their own newest `max_system_log`, so one tenant's volume never
    /// evicts another's history),
    /// and finished actions (with their log lines and outbox rows) that ended
    /// before `older_than`; and every expired session. **Invariant:** nothing
    /// of an unfinished action is ever deleted.
    async fn prune(&self, older_than: Duration, max_system_log: i64) -> Result<Pruned>;
}

/// The workers registry ([`crate::workers`]): one row per worker process,
/// live while its lease holds.
#[async_trait]
pub trait WorkerRegistry: Send + Sync {
    /// Registers a worker, or renews it with what it announces now (an
    /// upsert by id): it is live for `lease` from now, running nothing yet.
    async fn register_worker(&self, worker: &NewWorker, lease: Duration) -> Result<()>;

    /// A worker's heartbeat, one statement: it runs `running` now and stays
    /// live for `lease` from now. `false` when the worker has no row (it was
    /// pruned while it could not reach the database): register it again.
    async fn worker_heartbeat(&self, id: &str, running: &[Uuid], lease: Duration) -> Result<bool>;

    /// Removes a worker (a graceful shutdown); nothing when it has no row.
    async fn deregister_worker(&self, id: &str) -> Result<()>;

    /// One page of the live workers (lease not expired), oldest start first
    /// (then by id).
    async fn live_workers(&self, limit: i64, offset: i64) -> Result<Page<WorkerInfo>>;

    /// One live worker.
    async fn live_worker(&self, id: &str) -> Result<Option<WorkerInfo>>;

    /// Deletes the rows of workers whose lease expired; how many.
    async fn prune_workers(&self) -> Result<u64>;
}

/// Webhooks, their delivery rows and the relay's cursor over the events
/// ([`crate::webhook`]). A delivery row is the truth of a delivery: the
/// sender claims due rows, and a claim lasts a lease, so a worker that dies
/// mid-attempt leaves the row due again.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Stores a webhook; its `after_seq` is the last event `seq` stored now.
    async fn create_webhook(&self, new: &NewWebhook) -> Result<Webhook>;

    /// A webhook by uuid, if visible in `scope`.
    async fn get_webhook(&self, scope: Scope<'_>, uuid: Uuid) -> Result<Option<Webhook>>;

    /// Webhooks in `scope`, oldest first.
    async fn list_webhooks(&self, scope: Scope<'_>, limit: i64, offset: i64) -> Result<Page<Webhook>>;

    /// Writes a webhook's url, states and filters (found by uuid); `false`
    /// when it is gone.
    async fn save_webhook(&self, webhook: &Webhook) -> Result<bool>;

    /// Deletes a webhook and its deliveries; `false` when it was gone.
    async fn delete_webhook(&self, uuid: Uuid) -> Result<bool>;

    /// A webhook's deliveries (by its row id), newest first.
    async fn webhook_deliveries(&self, webhook_id: i64, limit: i64, offset: i64) -> Result<Page<Delivery>>;

    /// Every webhook as the relay matches events against it.
    async fn webhook_targets(&self) -> Result<Vec<WebhookTarget>>;

    /// The relay's cursor: events up to this `seq` were matched.
    async fn webhook_cursor(&self) -> Result<i64>;

    /// Moves the cursor from `from` to `to` and inserts `deliveries` (one
    /// per webhook and event: a duplicate is skipped), in one transaction.
    /// `false`, with nothing written, when the cursor was not at `from`
    /// (another relay moved it first).
    async fn advance_webhook_cursor(&self, from: i64, to: i64, deliveries: &[NewDelivery]) -> Result<bool>;

    /// Claims up to `limit` pending deliveries that are due, oldest due
    /// first, skipping the webhooks in `skip`: each claim counts an attempt
    /// and makes the row due again only after `lease`.
    async fn claim_deliveries(&self, limit: i64, lease: Duration, skip: &[i64]) -> Result<Vec<DueDelivery>>;

    /// Records how attempt `attempt` of delivery `id` ended; `false` (and
    /// nothing written) when that attempt no longer holds the row (its
    /// lease ran out and another attempt was made).
    async fn record_attempt(&self, id: i64, attempt: i32, outcome: &Attempt) -> Result<bool>;

    /// Retention: deletes delivered and failed deliveries recorded before
    /// `older_than` (pending ones are kept whatever their age); how many.
    async fn prune_deliveries(&self, older_than: Duration) -> Result<u64>;
}

fn not_recorded() -> crate::Error {
    crate::Error::Internal("the change was not recorded".into())
}

/// The store's traits, to call their methods on a concrete store
/// (`use stevedore_core::store::prelude::*`).
pub mod prelude {
    pub use super::{
        ActionStore, Database, EventStore, ObjectStore, Retention, Store, SystemLogStore, Tenancy,
        WebhookStore, WorkerRegistry,
    };
}

/// A shared, dynamically dispatched store.
pub type DynStore = Arc<dyn Store>;

/// A URL with its password replaced by `***`, for logs and errors; each URL
/// of a comma-separated list (a cluster's nodes) is redacted. When in doubt
/// it hides too much, never too little.
pub fn redact_url(url: &str) -> String {
    split_url_list(url)
        .into_iter()
        .map(redact_one)
        .collect::<Vec<_>>()
        .join(",")
}

/// The URLs of a comma-separated list, trimmed. A comma starts a new URL
/// only when a scheme (`amqp://`, …) follows it, so a password may hold
/// commas.
pub fn split_url_list(list: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in list.match_indices(',') {
        if starts_with_scheme(list[i + 1..].trim_start()) {
            out.push(list[start..i].trim());
            start = i + 1;
        }
    }
    out.push(list[start..].trim());
    out.retain(|u| !u.is_empty());
    out
}

fn starts_with_scheme(s: &str) -> bool {
    match s.find("://") {
        Some(end) if end > 0 => {
            let scheme = &s[..end];
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        _ => false,
    }
}

fn redact_one(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    // The credentials end at the last `@`: a password may hold `/`, `?`,
    // `@` or `:`. (A query holding `@` then hides more than it must.)
    let redacted = match rest.rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!("{}{}:***{}", &url[..scheme_end], &rest[..colon], &rest[at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    };
    redact_password_parameter(&redacted)
}

/// A `password=` query parameter (libpq's form) replaced by `***`.
fn redact_password_parameter(url: &str) -> String {
    let Some(q) = url.find('?') else {
        return url.to_string();
    };
    let (head, query) = url.split_at(q + 1);
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => p.to_string(),
        })
        .collect();
    format!("{head}{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords_and_nothing_else() {
        assert_eq!(
            split_url_list("amqp://a/, amqp://u:p,q@b/"),
            ["amqp://a/", "amqp://u:p,q@b/"]
        );
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://h/db?x=a@b"), "postgres://h/db?x=a@b");
        assert_eq!(redact_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
        assert_eq!(
            redact_url("amqp://g:p1@a:5672/%2f,amqp://g:p2@b:5672/%2f"),
            "amqp://g:***@a:5672/%2f,amqp://g:***@b:5672/%2f"
        );
        assert_eq!(redact_url("amqp://g@a/"), "amqp://g@a/");
        assert_eq!(redact_url("postgres://u:p/a@ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("amqp://u:p?ss@h/"), "amqp://u:***@h/");
        assert_eq!(redact_url("postgres://app:a,b@db/x"), "postgres://app:***@db/x");
        assert_eq!(
            redact_url("amqp://u:a,b@h1/%2f, amqp://u:c,d@h2/%2f"),
            "amqp://u:***@h1/%2f,amqp://u:***@h2/%2f"
        );
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=sec&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        for leaky in [
            "amqp://u:p?ss@h/",
            "postgres://app:a,b@db/x",
            "amqp://u:x:y@h/",
            "amqp://u:p#1@h/",
        ] {
            let shown = redact_url(leaky);
            let password = &leaky[leaky.find("://").unwrap() + 3..leaky.rfind('@').unwrap()];
            let password = password.split_once(':').unwrap().1;
            assert!(!shown.contains(password), "{leaky} → {shown}");
        }
    }

    #[test]
    fn a_page_holds_what_fits_its_budget_and_never_nothing() {
        let kib = 1024;
        assert_eq!(rows_within_budget([0, 0, 0], 10 * kib), 3);
        assert_eq!(rows_within_budget([kib as i64; 10], 4 * kib), 2);
        assert_eq!(
            rows_within_budget([100 * kib as i64, 1], kib),
            1,
            "a large row is a page alone"
        );
        assert_eq!(rows_within_budget([], kib), 0);
    }

    #[test]
    fn uuid_prefixes_become_key_ranges() {
        let (lo, hi) = uuid_prefix_range("7eaf7f").unwrap();
        assert_eq!(lo.to_string(), "7eaf7f00-0000-0000-0000-000000000000");
        assert_eq!(hi.to_string(), "7eaf7fff-ffff-ffff-ffff-ffffffffffff");
        let (lo, hi) = uuid_prefix_range("7eaf7fff-8").unwrap();
        assert_eq!(lo.to_string(), "7eaf7fff-8000-0000-0000-000000000000");
        assert_eq!(hi.to_string(), "7eaf7fff-8fff-ffff-ffff-ffffffffffff");
        let full = "7eaf7fff-882c-4f3d-9a8f-a22317ac00ce";
        assert_eq!(uuid_prefix_range(full).unwrap().0.to_string(), full);
        assert_eq!(uuid_prefix_range("").unwrap().0, Uuid::nil());
        for bad in [
            "7EAF",
            "xyz",
            "7eaf7fff8",
            "7eaf7fff-882c-4f3d-9a8f-a22317ac00ce0",
            "'; drop",
        ] {
            assert!(uuid_prefix_range(bad).is_none(), "{bad}");
        }
    }
}
