//! The `Store`: everything Stevedore keeps, behind one trait with two
//! backends — [`postgres::PgStore`] for production and [`sqlite::SqliteStore`]
//! for `stevedore dev` — that pass one conformance suite
//! (`shared/tests/store_conformance.rs`).
//!
//! **Invariant:** the database is the source of truth. A state change, its
//! event and (when work must be dispatched) its outbox row are written in one
//! transaction.
//!
//! **Invariant:** every state write is guarded by
//! [`ActionState::sources`](crate::state::ActionState::sources), and every
//! worker write by its lease token, so a stale or duplicate writer changes
//! nothing.

pub mod postgres;
mod rows;
pub mod sqlite;

use crate::action::{Action, NewAction};
use crate::event::{Event, EventKind};
use crate::logline::{LogLine, NewLogLine};
use crate::object::Object;
use crate::session::{NewSession, Session};
use crate::state::ActionState;
use crate::syslog::{NewSystemLog, Pruned, SystemLogEntry, SystemLogFilter};
use crate::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// A lease on an action, held by the worker that claimed it. Writes made under
/// a lease carry its token and are refused once the lease has moved on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseToken(pub Uuid);

/// The outcome of recording a new action.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// The action as stored (Pending, In progress, or the given final state).
    pub action: Action,
    /// Its creation event.
    pub event: Event,
    /// The outbox row to publish, when the action was dispatched (In progress).
    pub outbox_id: Option<i64>,
}

/// How a submission names the object its action runs on when the request
/// gave only the object's uuid and type: the store looks the object up in
/// the submission batch's own transaction (one statement for the batch, not
/// one round trip per request) and fills the action's object fields from it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectLookup {
    /// Namespaces the caller may see; `None`: all (internal callers only).
    pub visible: Option<Vec<String>>,
    /// The namespace the request's path names, if any: the object must be in it.
    pub namespace: Option<String>,
}

impl ObjectLookup {
    /// The one rule for an object a request names by uuid and type: it
    /// exists, has that type, is visible to the caller and is in the path's
    /// namespace. Anything else is "not found" (so another tenant's objects
    /// are not revealed).
    /// `found` is the object the store returned for `uuid`, owned or
    /// borrowed; it is handed back as it came.
    pub fn find<O: std::borrow::Borrow<Object>>(
        &self,
        object_type: &str,
        uuid: Uuid,
        found: Option<O>,
    ) -> Result<O> {
        found
            .filter(|o| {
                let o: &Object = o.borrow();
                o.uuid == uuid
                    && o.object_type == object_type
                    && self.visible.as_ref().is_none_or(|ns| ns.contains(&o.namespace))
                    && self.namespace.as_ref().is_none_or(|ns| *ns == o.namespace)
            })
            .ok_or_else(|| crate::Error::NotFound(format!("{object_type} {uuid}")))
    }

    /// [`ObjectLookup::find`] for the object an action is to run on, which
    /// must also not be terminated (a conflict). On success the action's
    /// object fields are the object's ([`NewAction::set_object`]).
    pub fn resolve(&self, action: &mut NewAction, found: Option<&Object>) -> Result<()> {
        let o = self.find(&action.object_type, action.object_uuid, found)?;
        if o.deleted_at.is_some() {
            return Err(crate::Error::Conflict(format!(
                "{} {} has been terminated",
                action.object_type, action.object_uuid
            )));
        }
        action.set_object(o);
        Ok(())
    }
}

/// One request of a submission batch ([`Store::submit_batch`]).
#[derive(Debug, Clone)]
pub struct Submission {
    /// The action to record. With a `lookup`, its `object_uuid` and
    /// `object_type` name the object and its other object fields are filled in.
    pub action: NewAction,
    /// How to find the action's object, when the caller did not load it.
    pub lookup: Option<ObjectLookup>,
}

/// A submission batch with its lookups resolved: the actions to record,
/// in order, and for each submission either its place among them or its
/// own error ([`ObjectLookup::resolve`]).
pub struct ResolvedBatch {
    /// The actions to record together, in the batch's order.
    pub actions: Vec<NewAction>,
    slots: Vec<Result<usize>>,
}

impl ResolvedBatch {
    /// Resolves the lookups of `batch` against `objects` (the objects found
    /// by uuid).
    pub fn new(batch: &[Submission], objects: &std::collections::HashMap<Uuid, Object>) -> Self {
        let mut actions = Vec::with_capacity(batch.len());
        let slots = batch
            .iter()
            .map(|s| {
                let mut action = s.action.clone();
                if let Some(lookup) = &s.lookup {
                    let found = objects.get(&action.object_uuid);
                    lookup.resolve(&mut action, found)?;
                }
                actions.push(action);
                Ok(actions.len() - 1)
            })
            .collect();
        ResolvedBatch { actions, slots }
    }

    /// Each submission's outcome, given the recorded [`ResolvedBatch::actions`]
    /// (in their order).
    pub fn answer(self, recorded: Vec<Submitted>) -> Vec<Result<Submitted>> {
        let mut recorded: Vec<Option<Submitted>> = recorded.into_iter().map(Some).collect();
        self.slots
            .into_iter()
            .map(|slot| {
                let i = slot?;
                recorded
                    .get_mut(i)
                    .and_then(Option::take)
                    .ok_or_else(|| crate::Error::Invalid("a submission was not recorded".into()))
            })
            .collect()
    }
}

/// The uuids of the objects `batch` must look up.
pub fn lookups_of(batch: &[Submission]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = batch
        .iter()
        .filter(|s| s.lookup.is_some())
        .map(|s| s.action.object_uuid)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// A row of the outbox: a job committed but not yet confirmed by the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Row id.
    pub id: i64,
    /// The action to dispatch.
    pub action_uuid: Uuid,
}

/// A successful claim: the action and the lease that fences writes to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The action, now leased (`claims` already incremented).
    pub action: Action,
    /// The lease token to present on every later write.
    pub token: LeaseToken,
}

/// The outcome of a state change.
#[derive(Debug, Clone, PartialEq)]
pub struct Transitioned {
    /// The action after the change.
    pub action: Action,
    /// The event recorded for it.
    pub event: Event,
    /// When the change ended the action and a Pending action on the same object
    /// was promoted to In progress: that action, its event and its outbox row.
    pub promoted: Option<Submitted>,
}

/// A worker's final write of one action: move `uuid` to `to` under `token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finish {
    /// The action.
    pub uuid: Uuid,
    /// Its final (or any) state.
    pub to: ActionState,
    /// The lease that fences the write.
    pub token: LeaseToken,
}

/// A user with the namespaces they belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Namespaces (organisations) they belong to; the first is their own.
    pub namespaces: Vec<String>,
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

/// Which namespaces a read may see: all (administration, workers) or a
/// caller's set (API requests).
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// No tenant restriction: only for trusted, internal callers.
    All,
    /// Only these namespaces.
    Namespaces(&'a [String]),
}

impl Scope<'_> {
    /// Whether a namespace is visible in this scope.
    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Namespaces(ns) => ns.iter().any(|n| n == namespace),
        }
    }
}

/// What expired leases were turned into by [`Store::reap_expired_leases`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reaped {
    /// Actions handed back for another attempt (lease cleared, outbox row added).
    pub requeued: Vec<Submitted>,
    /// Actions that ended: set Failed because they had used up their claims,
    /// or set Canceled because a cancel was under way (Canceling).
    pub failed: Vec<Transitioned>,
}

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

/// Which events a poll of the QNAP event API reads ([`Store::poll_events`]).
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

/// The persistence interface. See the module docs for the invariants every
/// implementation keeps.
#[async_trait]
pub trait Store: Send + Sync + 'static {
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

    // --- tenancy ---------------------------------------------------------

    /// Creates a user who belongs to `namespaces` (their own namespace, named
    /// like the user, is always added first). `Error::Conflict` if the user exists.
    async fn create_user(&self, name: &str, namespaces: &[String]) -> Result<User>;

    /// Looks a user up.
    async fn get_user(&self, name: &str) -> Result<Option<User>>;

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
    /// it, and advances the [credential revision](Store::credential_revision),
    /// in one transaction. `Error::NotFound` when the user has no such key.
    async fn revoke_api_key(&self, user: &str, id: i64) -> Result<RevokedKey>;

    /// A number that grows whenever a key is revoked or a session deleted,
    /// so that a process which cannot be told (see the API's
    /// `revocation` module) notices by reading it.
    async fn credential_revision(&self) -> Result<i64>;

    // --- sessions --------------------------------------------------------

    /// Stores a session. `Error::NotFound` when its user or key is gone
    /// (a key revoked meanwhile).
    async fn create_session(&self, session: &NewSession) -> Result<()>;

    /// The live session with this digest: `None` when there is none or it
    /// has expired (an expired one is deleted).
    async fn session(&self, digest: &str) -> Result<Option<Session>>;

    /// Deletes a session (logout) and advances the credential revision.
    /// Returns whose it was, `None` when there was none.
    async fn delete_session(&self, digest: &str) -> Result<Option<String>>;

    // --- objects ---------------------------------------------------------

    /// Stores a new object and records its `create` event, in one transaction.
    async fn insert_object(&self, object: &Object) -> Result<Event>;

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

    /// Replaces an object's name, state, attributes and `deleted_at` (its
    /// `updated_at` becomes now) and records a `kind` event for it, in one
    /// transaction. `Error::NotFound` when it is not visible in `scope`.
    async fn update_object(&self, scope: Scope<'_>, object: &Object, kind: EventKind) -> Result<Event>;

    // --- actions ---------------------------------------------------------

    /// Records a new action with its `create` event, in one transaction. Unless
    /// `new.completed` is set, its state is In progress with an outbox row when
    /// no other action on the same object is Pending, In progress or Canceling,
    /// and Pending (no outbox row) otherwise. Concurrent submissions on one
    /// object must still produce at most one In progress action.
    async fn submit_action(&self, new: NewAction) -> Result<Submitted>;

    /// Records several new actions in ONE transaction (group commit: one
    /// commit, one hold of the events lock, for the whole batch), with the
    /// same rules as [`Store::submit_action`] applied in order — a later
    /// action on an object an earlier one occupies is Pending. All or
    /// nothing: on an error none is recorded.
    async fn submit_actions(&self, batch: &[NewAction]) -> Result<Vec<Submitted>>;

    /// [`Store::submit_actions`] for submissions some of which name their
    /// object only by uuid ([`Submission::lookup`]): those objects are looked
    /// up as part of the batch, a submission whose object is not found or
    /// terminated gets its own error ([`ObjectLookup::resolve`]), and the
    /// rest are recorded together. `Err` only when the batch as a whole
    /// failed (nothing recorded). The default looks each object up on its
    /// own; a networked store does it in the batch's transaction.
    async fn submit_batch(&self, batch: &[Submission]) -> Result<Vec<Result<Submitted>>> {
        let mut objects = std::collections::HashMap::new();
        for id in lookups_of(batch) {
            if let Some(o) = self.get_object(Scope::All, id).await? {
                objects.insert(id, o);
            }
        }
        let resolved = ResolvedBatch::new(batch, &objects);
        let recorded = if resolved.actions.is_empty() {
            Vec::new()
        } else {
            self.submit_actions(&resolved.actions).await?
        };
        Ok(resolved.answer(recorded))
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

    /// Outbox rows not marked sent and created at least `min_age` ago, oldest
    /// first, at most `limit`.
    async fn unsent_outbox(&self, min_age: Duration, limit: i64) -> Result<Vec<OutboxEntry>>;

    /// Marks outbox rows as sent (published and confirmed). Idempotent.
    async fn mark_outbox_sent(&self, ids: &[i64]) -> Result<()>;

    /// Claims an In progress (or Canceling: the worker then stops it at once)
    /// action for `owner` with a lease of `lease`, when it
    /// has no lease or its lease has expired. Increments `claims`. `None` when
    /// the action is missing, not In progress, or leased by someone else.
    async fn claim_action(&self, uuid: Uuid, owner: &str, lease: Duration) -> Result<Option<Claim>>;

    /// [`Store::claim_action`] of several actions (one job message's), in one
    /// statement where the backend can; each with its own lease token. Returns
    /// the claims made, in the order of `uuids`; the others were not claimable.
    async fn claim_actions(&self, uuids: &[Uuid], owner: &str, lease: Duration) -> Result<Vec<Claim>> {
        let mut out = Vec::with_capacity(uuids.len());
        for u in uuids {
            if let Some(c) = self.claim_action(*u, owner, lease).await? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Extends a lease and returns the action's current state, so that a
    /// worker notices a cancel (Canceling) even when the control message was
    /// lost; `None` when the token no longer holds the action.
    async fn heartbeat(&self, uuid: Uuid, token: LeaseToken, lease: Duration) -> Result<Option<ActionState>>;

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

    /// Moves an action to `to`, checking the transition with
    /// [`ActionState::check_transition`] atomically (the guard is in the
    /// `UPDATE`), with its `update` event. With `Some(token)` the write is fenced
    /// by the lease. A final state sets `end_date`, clears the lease, and
    /// promotes the oldest Pending action on the same object (when no other
    /// action there is In progress or Canceling). Errors: `NotFound`, or
    /// `Transition` when the current state does not allow it (or the token does
    /// not hold the lease).
    async fn transition(
        &self,
        scope: Scope<'_>,
        uuid: Uuid,
        to: ActionState,
        token: Option<LeaseToken>,
    ) -> Result<Transitioned>;

    /// [`Store::transition`] of several leased actions (scope: all), each
    /// with its own outcome, in one commit where the backend can (group
    /// commit of workers' final writes). An `Err` of the whole call means
    /// nothing was written.
    async fn transition_many(&self, batch: &[Finish]) -> Result<Vec<Result<Transitioned>>> {
        let mut out = Vec::with_capacity(batch.len());
        for f in batch {
            out.push(self.transition(Scope::All, f.uuid, f.to, Some(f.token)).await);
        }
        Ok(out)
    }

    /// Clears expired leases: an action whose `claims` is below `max_claims`
    /// gets a new outbox row (its state stays In progress, or Canceling → it is
    /// set Canceled); one that reached `max_claims` is set Failed. Both record
    /// events.
    async fn reap_expired_leases(&self, max_claims: i32, limit: i64) -> Result<Reaped>;

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

    // --- events ----------------------------------------------------------

    /// Events with `seq > after`, in `scope`, oldest first, at most `limit`.
    async fn events_after(&self, scope: Scope<'_>, after: i64, limit: i64) -> Result<Vec<Event>>;

    /// At most `limit` events in `scope` (after a sequence number, or the
    /// newest), oldest first, each with its action's requester: one
    /// statement, however many events and actions it covers.
    async fn poll_events(&self, scope: Scope<'_>, poll: EventPoll, limit: i64) -> Result<Vec<PolledEvent>>;

    /// The highest event sequence number stored (0 when there is none): where
    /// a stream client that gave no resume point starts from.
    async fn last_event_seq(&self) -> Result<i64>;

    // --- system log and retention -----------------------------------------

    /// Writes system log entries (action state changes write theirs inside
    /// the store, in the transaction of the change).
    async fn append_system_log(&self, entries: &[NewSystemLog]) -> Result<()>;

    /// System log entries matching `filter` in `scope`, newest first. An
    /// entry without a namespace is visible only in `Scope::All`.
    async fn system_log(
        &self,
        scope: Scope<'_>,
        filter: &SystemLogFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<SystemLogEntry>>;

    /// Retention: deletes system log entries and events older than
    /// `older_than`, system log entries beyond the newest `max_system_log` of
    /// their tenant (each namespace, and the operators-only entries, keep
    /// their own newest `max_system_log`, so one tenant's volume never
    /// evicts another's history),
    /// and finished actions (with their log lines and outbox rows) that ended
    /// before `older_than`; and every expired session. **Invariant:** nothing
    /// of an unfinished action is ever deleted.
    async fn prune(&self, older_than: Duration, max_system_log: i64) -> Result<Pruned>;
    // --- hand-back -------------------------------------------------------

    /// Gives a leased In progress (or Canceling) action back at once, as a
    /// worker that shuts down does with what it could not finish: the lease
    /// is cleared (only if `token` still holds it) and an outbox row and an
    /// `update` event are recorded in the same transaction, so another worker
    /// can claim it without waiting for the lease to expire. `None` when the
    /// token no longer holds the action (it finished, or was reaped).
    async fn release_lease(&self, uuid: Uuid, token: LeaseToken) -> Result<Option<Submitted>>;
}

/// A shared, dynamically dispatched store.
pub type DynStore = Arc<dyn Store>;

/// Opens the store a URL names: `postgres://…` / `postgresql://…` or
/// `sqlite://path` (created if missing). Does not migrate.
pub async fn connect(url: &str) -> Result<DynStore> {
    connect_with(url, &crate::config::DatabaseSettings::default()).await
}

/// [`connect`] with the config's `[database]` settings (PostgreSQL only).
pub async fn connect_with(url: &str, settings: &crate::config::DatabaseSettings) -> Result<DynStore> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PgStore::connect_with_timeout(
                url,
                postgres::DEFAULT_MAX_CONNECTIONS,
                settings.acquire_timeout,
            )
            .await?,
        ))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(url).await?))
    } else {
        Err(crate::Error::Config(format!(
            "unsupported database URL scheme in {:?}: use postgres:// or sqlite://",
            redact_url(url)
        )))
    }
}

/// A URL with its password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
