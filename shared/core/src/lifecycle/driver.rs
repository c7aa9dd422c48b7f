//! The interface a database implements for the lifecycle engine: the
//! primitives of one transaction, and nothing that decides.
//!
//! A driver is a transaction in progress ([`crate::store`]'s `begin_changes`
//! opens one). Every method runs inside it; [`Driver::commit`] ends it, and
//! dropping a driver without committing rolls everything back.
//!
//! What each primitive promises, so the engine's rules hold on every backend:
//!
//! - **Locks.** [`Driver::lock_objects`] takes the locks of objects in the
//!   order given (the engine sorts them), held to the end of the transaction:
//!   two transactions changing the same object's actions run one after the
//!   other. [`Driver::actions`] with `lock` takes the actions' row locks (in
//!   uuid order) after the object locks. Events are numbered last, under a
//!   lock of their own, so their order is the commit order. (A database
//!   whose transactions already run one at a time, like SQLite's, needs no
//!   locks at all.)
//! - **Guards.** [`Driver::update_states`], [`Driver::promote`],
//!   [`Driver::release`] and [`Driver::update_object`] write only rows that
//!   still meet their guard, so a stale or duplicate writer changes nothing;
//!   the engine has already checked the same rules under the locks.
//! - **Order.** Methods that return rows for a batch return them in the
//!   order of their input, except where they say otherwise.

use super::requests::LeaseToken;
use super::{Changeset, StoredAction, Written};
use crate::action::NewAction;
use crate::object::Object;
use crate::state::ActionState;
use crate::Result;
use async_trait::async_trait;
use std::collections::HashSet;
use uuid::Uuid;

/// What the engine needs to know of an action before it changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionHead {
    /// The action.
    pub uuid: Uuid,
    /// Its namespace (which callers may see it).
    pub namespace: String,
    /// Its object.
    pub object_uuid: Uuid,
    /// Its state.
    pub state: ActionState,
    /// Its lease, if a worker holds (or held) it.
    pub lease: Option<LeaseToken>,
    /// Whether that lease has expired.
    pub lease_expired: bool,
    /// How many times it was claimed.
    pub claims: i32,
}

/// A guarded state change: move `uuid` to `to` if its state is one of
/// `to`'s sources ([`ActionState::sources`]) and, with a `token`, that lease
/// still holds it. A final state sets the end date and clears the lease;
/// In progress sets the dispatch time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateUpdate {
    /// The action.
    pub uuid: Uuid,
    /// Its new state.
    pub to: ActionState,
    /// The lease that fences the write (a worker's), if any.
    pub token: Option<LeaseToken>,
}

/// The primitives of one transaction. See the module docs.
#[async_trait]
pub trait Driver: Send {
    /// Takes the locks of `objects` (sorted, without duplicates) until the
    /// end of the transaction.
    async fn lock_objects(&mut self, objects: &[Uuid]) -> Result<()>;

    /// Of `objects`, those that are busy: with an action that is not over
    /// ([`super::active_states`]).
    async fn busy_objects(&mut self, objects: &[Uuid]) -> Result<HashSet<Uuid>>;

    /// The objects with these uuids (deleted ones included), in no order.
    async fn objects(&mut self, uuids: &[Uuid]) -> Result<Vec<Object>>;

    /// The heads of the actions with these uuids, in no order (missing ones
    /// are left out); with `lock`, their rows are locked too.
    async fn actions(&mut self, uuids: &[Uuid], lock: bool) -> Result<Vec<ActionHead>>;

    /// Inserts new actions, `batch[i]` in `states[i]` (start date now; end
    /// date now when final; dispatch time now when In progress). A uuid that
    /// exists is a conflict.
    async fn insert_actions(
        &mut self,
        batch: &[NewAction],
        states: &[ActionState],
    ) -> Result<Vec<StoredAction>>;

    /// Makes the guarded state changes ([`StateUpdate`]); returns the
    /// actions changed, in no order.
    async fn update_states(&mut self, updates: &[StateUpdate]) -> Result<Vec<StoredAction>>;

    /// For each of `objects`, moves its oldest Pending action to In progress
    /// (dispatch time now) if no action holds the object
    /// ([`super::holding_states`]); returns the actions promoted, in no order.
    async fn promote(&mut self, objects: &[Uuid]) -> Result<Vec<StoredAction>>;

    /// For each of `left` (actions that left their object's queue in this
    /// transaction: promoted, or canceled while Pending), the oldest action
    /// of the same object still Pending and created after it — the first
    /// whose queue position moved — keyed by the action of `left`; none
    /// when nothing waits behind it.
    async fn next_waiting(&mut self, left: &[Uuid]) -> Result<Vec<(Uuid, StoredAction)>>;

    /// Clears the lease of `uuid` if `token` still holds it and the action
    /// is claimable ([`super::claimable_states`]), and sets its dispatch time
    /// to now, so another worker may claim it: the action as changed, `None`
    /// when the guard did not hold.
    async fn release(&mut self, uuid: Uuid, token: LeaseToken) -> Result<Option<StoredAction>>;

    /// Inserts a new object. A uuid that exists is a conflict.
    async fn insert_object(&mut self, object: &Object) -> Result<()>;

    /// Replaces an object's name, state, attributes and deletion time (its
    /// `updated_at` becomes now) unless it is terminated: the object as
    /// stored, `None` when the guard did not hold.
    async fn update_object(&mut self, object: &Object) -> Result<Option<Object>>;

    /// Writes a changeset: its system log entries, its outbox rows and, last,
    /// its events, numbered in order and stamped with the transaction's time.
    async fn write(&mut self, changes: Changeset) -> Result<Written>;

    /// Commits the transaction.
    async fn commit(self: Box<Self>) -> Result<()>;
}
