//! The lifecycle core: every rule of an action's life, and of the objects
//! actions run on, in one place.
//!
//! The core is split the way River's drivers and Oban's engines split a
//! queue from its database:
//!
//! - this module holds the **rules**, as plain functions over plain values:
//!   which state a new action starts in ([`initial_states`]), what a cancel
//!   moves an action to ([`cancel_target`]), when an action can be retried
//!   ([`check_retry`]), what an expired lease turns into ([`on_expired_lease`]),
//!   how an object is changed ([`ObjectChange`]);
//! - [`changeset`] holds what a change **records** besides its rows (the
//!   events, the system log entries and the outbox rows), as one value a
//!   driver writes in one go;
//! - [`driver`] is the small interface a database implements: per-transaction
//!   primitives (lock objects, find busy ones, insert, guarded update,
//!   promote, write a changeset), and nothing that decides;
//! - [`engine`] runs the rules over a driver: submissions, transitions
//!   (finishes, cancels), lease expiry and hand-back, object changes. A single
//!   request is a batch of one: there is one path for each.
//!
//! **Invariant:** a change, what it records and (when work must be
//! dispatched) its outbox row are written in one transaction, by the engine.
//! Legal transitions are decided by [`crate::state`] alone, and every state
//! write a driver makes is guarded by them.

pub mod changeset;
pub mod driver;
pub mod engine;
pub mod requests;

use crate::action::{Action, NewAction};
use crate::event::{Event, EventKind};
use crate::object::Object;
use crate::state::ActionState;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use uuid::Uuid;

pub use changeset::{Changeset, Written};
pub use driver::{ActionHead, Driver, StateUpdate};

/// An action as a driver read it from its row, with what its events need
/// besides (the parents of its object).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAction {
    /// The domain action.
    pub action: Action,
    /// Parents of its object, for its events.
    pub object_parents: Vec<String>,
}

impl StoredAction {
    /// The event for this action's current state, before it is stored
    /// (`seq` 0; the driver stamps `seq` and, where the database keeps the
    /// clock, `datetime`).
    pub fn event(&self, kind: EventKind, datetime: DateTime<Utc>) -> Event {
        let a = &self.action;
        let mut parents = Vec::with_capacity(1 + self.object_parents.len());
        parents.push(a.object.clone());
        parents.extend(self.object_parents.iter().cloned());
        Event {
            object_type: "action".to_string(),
            action: kind,
            uuid: a.uuid.to_string(),
            resource_uri: crate::action::action_uri(&a.uuid),
            state: a.state.as_str().to_string(),
            parents,
            datetime,
            seq: 0,
            namespace: a.namespace.clone(),
        }
    }
}

/// The event for an object's current state, before it is stored.
pub fn object_event(object: &Object, kind: EventKind, datetime: DateTime<Utc>) -> Event {
    Event {
        object_type: object.object_type.clone(),
        action: kind,
        uuid: object.uuid.to_string(),
        resource_uri: object.resource_uri.clone(),
        state: object.state.clone(),
        parents: object.parents.clone(),
        datetime,
        seq: 0,
        namespace: object.namespace.clone(),
    }
}

/// The states in which an action is not over: it keeps its object busy, so
/// a new action on the object waits behind it.
pub fn active_states() -> Vec<ActionState> {
    ActionState::ALL.into_iter().filter(|s| !s.is_final()).collect()
}

/// The states that occupy an object ([`ActionState::holds_object`]): while
/// one of its actions is in one, no Pending action there is promoted.
pub fn holding_states() -> Vec<ActionState> {
    ActionState::ALL
        .into_iter()
        .filter(|s| s.holds_object())
        .collect()
}

/// The states a claim accepts: In progress, and Canceling (a cancel that
/// arrived before any worker held the action; the claimer stops it at once).
pub fn claimable_states() -> Vec<ActionState> {
    vec![ActionState::InProgress, ActionState::Canceling]
}

/// Whether a change from `from` to `to` takes an action out of its
/// object's queue of Pending actions (promoted, or canceled while it
/// waited): every Pending action behind it then moves up one place.
pub fn leaves_queue(from: ActionState, to: ActionState) -> bool {
    from == ActionState::Pending && to != ActionState::Pending
}

/// The rule for a new action's first state, for a batch in order: one asked
/// for as already `completed` is recorded in that (final) state; one whose
/// object is free starts In progress (and is dispatched), which makes the
/// object busy for the rest of the batch; any other waits as Pending.
/// `busy` holds the objects busy before the batch, and gains those the batch
/// occupies.
pub fn initial_states(batch: &[NewAction], busy: &mut HashSet<Uuid>) -> Result<Vec<ActionState>> {
    if let Some(state) = batch.iter().filter_map(|n| n.completed).find(|s| !s.is_final()) {
        return Err(Error::Invalid(format!(
            "a completed action must be in a final state, not {state}"
        )));
    }
    Ok(batch
        .iter()
        .map(|new| match new.completed {
            Some(done) => done,
            None if busy.insert(new.object_uuid) => ActionState::InProgress,
            None => ActionState::Pending,
        })
        .collect())
}

/// The objects whose busy state decides the initial states of `batch`
/// (those of its actions not recorded as completed), sorted and deduplicated:
/// the order in which their locks are taken.
pub fn objects_to_lock(batch: &[NewAction]) -> Vec<Uuid> {
    let mut objects: Vec<Uuid> = batch
        .iter()
        .filter(|n| n.completed.is_none())
        .map(|n| n.object_uuid)
        .collect();
    objects.sort();
    objects.dedup();
    objects
}

/// What cancelling an action in `state` moves it to: a Pending action is
/// Canceled at once (it never ran); an In progress one becomes Canceling,
/// and its worker stops it. Any other state cannot be canceled (a conflict).
pub fn cancel_target(uuid: Uuid, state: ActionState) -> Result<ActionState> {
    match state {
        ActionState::Pending => Ok(ActionState::Canceled),
        ActionState::InProgress => Ok(ActionState::Canceling),
        other => Err(Error::Conflict(format!(
            "action {uuid} is {other}: only Pending or In progress actions can be canceled"
        ))),
    }
}

/// The rule for retrying `old`: it has ended, its operation is still
/// configured (`operation_configured`), and its object still exists (`object`,
/// as the caller may see it). `Ok` carries the object the retry runs on; the
/// error is the conflict that says why not.
pub fn check_retry<'o>(
    old: &Action,
    operation_configured: bool,
    object: Option<&'o Object>,
) -> Result<&'o Object> {
    if !old.state.can_be_retried() {
        return Err(Error::Conflict(format!(
            "action {} is {}: only Success, Failed or Canceled actions can be retried",
            old.uuid, old.state
        )));
    }
    if !operation_configured {
        return Err(Error::Conflict(format!(
            "cannot retry: no operation is configured for {} {}",
            old.object_type, old.verb
        )));
    }
    object
        .filter(|o| o.deleted_at.is_none())
        .ok_or_else(|| Error::Conflict(format!("cannot retry: {} no longer exists", old.object)))
}

/// Who asks for an action, and from where: what a retry takes from its own
/// request rather than from the action it retries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Requester {
    /// The user.
    pub user: String,
    /// Client IP.
    pub ip: String,
    /// Client location.
    pub location: String,
    /// Client User-Agent.
    pub user_agent: String,
}

/// The new action that retries `old` on `object`: the same operation
/// (method, path, body); who asked, and from where, is the retry's.
pub fn retry_of(old: &Action, object: &Object, by: &Requester) -> NewAction {
    let mut new = NewAction {
        uuid: Uuid::new_v4(),
        namespace: String::new(),
        action: old.action.clone(),
        object: String::new(),
        object_uuid: object.uuid,
        object_type: String::new(),
        object_parents: Vec::new(),
        verb: old.verb.clone(),
        method: old.method.clone(),
        path: old.path.clone(),
        body: old.body.clone(),
        ip: by.ip.clone(),
        location: by.location.clone(),
        user: by.user.clone(),
        user_agent: by.user_agent.clone(),
        is_user_action: true,
        retry_of: Some(old.uuid),
        completed: None,
    };
    new.set_object(object);
    new
}

/// What an action whose lease expired (its worker died or stalled) becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseExpiry {
    /// It used up its claims: Failed.
    Fail,
    /// A cancel was under way: Canceled.
    Cancel,
    /// Handed back for another attempt: lease cleared, dispatched again.
    Requeue,
}

/// The rule for an expired lease: an action that reached `max_claims`
/// claims fails (a poison action cannot loop for ever); a Canceling one is
/// Canceled (nobody is left to stop it); any other runs again.
pub fn on_expired_lease(state: ActionState, claims: i32, max_claims: i32) -> LeaseExpiry {
    if claims >= max_claims {
        LeaseExpiry::Fail
    } else if state == ActionState::Canceling {
        LeaseExpiry::Cancel
    } else {
        LeaseExpiry::Requeue
    }
}

/// A change to an object, as a request asks for it.
#[derive(Debug, Clone, PartialEq)]
pub enum ObjectChange {
    /// A new object (its fields already validated and its parents resolved).
    Create(Object),
    /// New name and attributes for an existing object.
    Update(ObjectPatch),
    /// Terminate: the object stays readable with state Terminated.
    Terminate,
}

/// The changes of a `PATCH`: a new name, attributes to set, and attributes
/// to remove.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObjectPatch {
    /// The new name, if it changes.
    pub name: Option<String>,
    /// Attributes to set (`Some`) or remove (`None`), in request order.
    pub attributes: Vec<(String, Option<serde_json::Value>)>,
}

impl ObjectChange {
    /// The event kind the change records.
    pub fn event_kind(&self) -> EventKind {
        match self {
            ObjectChange::Create(_) => EventKind::Create,
            ObjectChange::Update(_) => EventKind::Update,
            ObjectChange::Terminate => EventKind::Delete,
        }
    }

    /// The verb of the action the change records (`create`, `update`,
    /// `terminate`: what an operation for it is configured under).
    pub fn verb(&self) -> &'static str {
        match self {
            ObjectChange::Create(_) => "create",
            ObjectChange::Update(_) => "update",
            ObjectChange::Terminate => "terminate",
        }
    }

    /// The past tense the system log writes (`… created`).
    pub fn done(&self) -> &'static str {
        match self {
            ObjectChange::Create(_) => "created",
            ObjectChange::Update(_) => "updated",
            ObjectChange::Terminate => "terminated",
        }
    }

    /// Applies an update or a termination to `current`, the object as
    /// stored, and returns the object to write. A terminated object is never
    /// changed again (a conflict), so a `PATCH` that raced a `DELETE` cannot
    /// bring it back.
    pub fn apply(&self, mut current: Object, now: DateTime<Utc>) -> Result<Object> {
        if current.deleted_at.is_some() {
            let what = match self {
                ObjectChange::Terminate => "is already terminated",
                _ => "has been terminated",
            };
            return Err(Error::Conflict(format!(
                "{} {} {what}",
                current.object_type, current.uuid
            )));
        }
        match self {
            ObjectChange::Create(o) => return Ok(o.clone()),
            ObjectChange::Update(patch) => {
                if let Some(name) = &patch.name {
                    current.name = name.clone();
                }
                let mut attrs = current.attributes.as_object().cloned().unwrap_or_default();
                for (k, v) in &patch.attributes {
                    match v {
                        Some(v) => attrs.insert(k.clone(), v.clone()),
                        None => attrs.remove(k),
                    };
                }
                current.attributes = serde_json::Value::Object(attrs);
            }
            ObjectChange::Terminate => {
                current.deleted_at = Some(now);
                current.state = "Terminated".into();
            }
        }
        current.updated_at = now;
        Ok(current)
    }
}

/// The system log entry of an object change: `<name> (<type> <uuid>)
/// <done>`. The name leads, as in the QNAP log.
pub fn object_log_entry(object: &Object, done: &str, user: &str) -> crate::syslog::NewSystemLog {
    crate::syslog::NewSystemLog {
        namespace: Some(object.namespace.clone()),
        category: object.object_type.clone(),
        level: crate::syslog::LogLevel::Info,
        user: user.to_string(),
        message: format!("{} ({} {}) {done}", object.name, object.object_type, object.uuid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::new_action;

    #[test]
    fn only_a_pending_action_that_changes_leaves_the_queue() {
        use ActionState::*;
        for to in [InProgress, Canceled] {
            assert!(leaves_queue(Pending, to), "{to}");
        }
        assert!(!leaves_queue(Pending, Pending));
        for from in [InProgress, Canceling] {
            for to in ActionState::ALL {
                assert!(
                    !leaves_queue(from, to),
                    "{from} → {to}: the holder is no queue place"
                );
            }
        }
    }

    fn ended(new: &NewAction, state: ActionState) -> Action {
        Action {
            uuid: new.uuid,
            namespace: new.namespace.clone(),
            action: new.action.clone(),
            object: new.object.clone(),
            object_uuid: new.object_uuid,
            object_type: new.object_type.clone(),
            verb: new.verb.clone(),
            method: new.method.clone(),
            path: new.path.clone(),
            body: new.body.clone(),
            ip: new.ip.clone(),
            location: new.location.clone(),
            user: new.user.clone(),
            user_agent: new.user_agent.clone(),
            is_user_action: new.is_user_action,
            state,
            start_date: None,
            end_date: None,
            retry_of: None,
            claims: 1,
            progress: None,
            progress_message: String::new(),
        }
    }

    #[test]
    fn the_first_action_on_a_free_object_runs_and_the_rest_wait() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut done = new_action(b, "start");
        done.completed = Some(ActionState::Success);
        let batch = [
            new_action(a, "start"),
            new_action(a, "stop"),
            done,
            new_action(b, "start"),
        ];
        let mut busy = HashSet::new();
        let states = initial_states(&batch, &mut busy).unwrap();
        use ActionState::*;
        assert_eq!(states, [InProgress, Pending, Success, InProgress]);
        let mut busy = HashSet::from([b]);
        let states = initial_states(&batch[2..], &mut busy).unwrap();
        assert_eq!(states, [Success, Pending]);
        assert_eq!(objects_to_lock(&batch), {
            let mut v = vec![a, b];
            v.sort();
            v
        });
    }

    #[test]
    fn a_completed_action_must_be_final() {
        let mut new = new_action(Uuid::new_v4(), "start");
        new.completed = Some(ActionState::InProgress);
        assert!(matches!(
            initial_states(&[new], &mut HashSet::new()),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn cancel_ends_a_pending_action_and_asks_a_running_one_to_stop() {
        let u = Uuid::new_v4();
        assert_eq!(
            cancel_target(u, ActionState::Pending).unwrap(),
            ActionState::Canceled
        );
        assert_eq!(
            cancel_target(u, ActionState::InProgress).unwrap(),
            ActionState::Canceling
        );
        for s in [
            ActionState::Canceling,
            ActionState::Success,
            ActionState::Failed,
            ActionState::Canceled,
        ] {
            assert!(matches!(cancel_target(u, s), Err(Error::Conflict(_))), "{s}");
        }
    }

    #[test]
    fn an_expired_lease_fails_cancels_or_requeues() {
        use LeaseExpiry::*;
        assert_eq!(on_expired_lease(ActionState::InProgress, 3, 3), Fail);
        assert_eq!(on_expired_lease(ActionState::Canceling, 3, 3), Fail);
        assert_eq!(on_expired_lease(ActionState::Canceling, 1, 3), Cancel);
        assert_eq!(on_expired_lease(ActionState::InProgress, 1, 3), Requeue);
    }

    fn object() -> Object {
        let now = Utc::now();
        Object {
            uuid: Uuid::new_v4(),
            namespace: "acme".into(),
            object_type: "service".into(),
            resource_uri: "/api/app/v1/acme/service/x/".into(),
            name: "web".into(),
            state: "Created".into(),
            parents: vec![],
            attributes: serde_json::json!({"image": "nginx", "port": 80}),
            created_at: now,
            updated_at: now,
            deleted_at: None,
        }
    }

    #[test]
    fn a_patch_sets_and_removes_attributes_and_a_terminated_object_stays_terminated() {
        let now = Utc::now();
        let patch = ObjectChange::Update(ObjectPatch {
            name: Some("api".into()),
            attributes: vec![("port".into(), None), ("cpu".into(), Some(2.into()))],
        });
        let changed = patch.apply(object(), now).unwrap();
        assert_eq!(changed.name, "api");
        assert_eq!(
            changed.attributes,
            serde_json::json!({"image": "nginx", "cpu": 2})
        );
        let gone = ObjectChange::Terminate.apply(changed, now).unwrap();
        assert_eq!(gone.state, "Terminated");
        assert!(
            matches!(patch.apply(gone.clone(), now), Err(Error::Conflict(m)) if m.contains("has been terminated"))
        );
        assert!(
            matches!(ObjectChange::Terminate.apply(gone, now), Err(Error::Conflict(m)) if m.contains("already terminated"))
        );
    }

    #[test]
    fn a_retry_needs_an_ended_action_a_configured_operation_and_a_live_object() {
        let o = object();
        let mut old = ended(&new_action(o.uuid, "start"), ActionState::Failed);
        assert!(check_retry(&old, true, Some(&o)).is_ok());
        assert!(check_retry(&old, false, Some(&o)).is_err());
        assert!(check_retry(&old, true, None).is_err());
        let mut gone = o.clone();
        gone.deleted_at = Some(Utc::now());
        assert!(check_retry(&old, true, Some(&gone)).is_err());
        old.state = ActionState::InProgress;
        assert!(check_retry(&old, true, Some(&o)).is_err());
        let by = Requester {
            user: "bob".into(),
            ..Default::default()
        };
        let new = retry_of(&old, &o, &by);
        assert_eq!(
            (new.retry_of, new.user.as_str(), new.object_uuid),
            (Some(old.uuid), "bob", o.uuid)
        );
        assert_eq!(new.object, o.resource_uri);
    }
}
