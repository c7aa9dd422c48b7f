//! What is asked of the lifecycle and what it answers: submissions and
//! their outcomes, state changes and theirs, leases, and the tenant scope
//! every request is made in.

use crate::action::{Action, NewAction};
use crate::event::Event;
use crate::object::Object;
use crate::state::ActionState;
use crate::Result;
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

/// One request of a submission batch ([`crate::store::ActionStore::submit_batch`]).
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
                    .ok_or_else(|| crate::Error::Internal("a submission was not recorded".into()))
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
    /// When the change took an action out of its object's queue (the
    /// promoted one, or this one canceled while Pending) and another still
    /// waits behind it: the `update` event of the first of those, which
    /// tells the streams that it and every Pending action behind it moved
    /// up one place.
    pub queue_moved: Option<Event>,
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

/// What expired leases were turned into by [`crate::store::ActionStore::reap_expired_leases`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reaped {
    /// Actions handed back for another attempt (lease cleared, outbox row added).
    pub requeued: Vec<Submitted>,
    /// Actions that ended: set Failed because they had used up their claims,
    /// or set Canceled because a cancel was under way (Canceling).
    pub failed: Vec<Transitioned>,
}
