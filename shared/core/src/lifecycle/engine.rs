//! The engine: the lifecycle rules run over a [`Driver`], one transaction
//! at a time. Each function here is the only path for its kind of change;
//! a single request is a batch of one.
//!
//! The shape of every change is the same: read what the rules need, under
//! the locks ([`Driver::lock_objects`], then [`Driver::actions`] with
//! `lock`); decide with the rules of [`super`]; make the guarded writes;
//! record the changes in one [`Changeset`] and write it last
//! ([`Driver::write`]), so the events lock is the last lock taken.

use super::requests::{
    lookups_of, LeaseToken, ObjectLookup, ResolvedBatch, Scope, Submission, Submitted, Transitioned,
};
use super::{
    cancel_target, initial_states, leaves_queue, objects_to_lock, on_expired_lease, ActionHead, Changeset,
    Driver, LeaseExpiry, ObjectChange, StateUpdate, StoredAction, Written,
};
use crate::action::NewAction;
use crate::event::{Event, EventKind};
use crate::object::Object;
use crate::state::{ActionState, IllegalTransition};
use crate::{Error, Result};
use std::collections::HashMap;
use uuid::Uuid;

/// What a transition request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// This state.
    State(ActionState),
    /// Whatever a cancel moves the action to ([`cancel_target`]).
    Cancel,
}

/// One request of a transition batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitionRequest {
    /// The action.
    pub uuid: Uuid,
    /// What it should become.
    pub target: Target,
    /// The lease that fences the write (a worker's), if any.
    pub token: Option<LeaseToken>,
}

/// Records a batch of submissions ([`crate::store::ActionStore::submit_batch`]):
/// looks up the objects named only by uuid, decides each action's first
/// state, inserts them and records their changes. Each submission gets its
/// own outcome (an object not found is its error alone); an `Err` means the
/// transaction failed as a whole.
pub async fn submit(tx: &mut dyn Driver, batch: &[Submission]) -> Result<Vec<Result<Submitted>>> {
    let ids = lookups_of(batch);
    let objects: HashMap<Uuid, Object> = if ids.is_empty() {
        HashMap::new()
    } else {
        tx.objects(&ids).await?.into_iter().map(|o| (o.uuid, o)).collect()
    };
    let resolved = ResolvedBatch::new(batch, &objects);
    if resolved.actions.is_empty() {
        return Ok(resolved.answer(Vec::new()));
    }
    let mut changes = Changeset::default();
    let stored = record_new(tx, &resolved.actions, &mut changes).await?;
    let written = write(tx, changes).await?;
    let (mut events, outbox) = written.into_parts();
    let recorded = stored
        .into_iter()
        .map(|s| submitted(s, &mut events, &outbox))
        .collect::<Result<Vec<_>>>()?;
    Ok(resolved.answer(recorded))
}

/// Inserts new actions in their first states and adds their changes to
/// `changes`: the object locks, the busy check, one insert.
async fn record_new(
    tx: &mut dyn Driver,
    actions: &[NewAction],
    changes: &mut Changeset,
) -> Result<Vec<StoredAction>> {
    let objects = objects_to_lock(actions);
    tx.lock_objects(&objects).await?;
    let mut busy = tx.busy_objects(&objects).await?;
    let states = initial_states(actions, &mut busy)?;
    let stored = tx.insert_actions(actions, &states).await?;
    for s in &stored {
        changes.action(s, EventKind::Create, s.action.state == ActionState::InProgress);
    }
    Ok(stored)
}

/// A recorded action with its event (the next of `events`) and outbox row.
fn submitted(
    s: StoredAction,
    events: &mut impl Iterator<Item = Event>,
    outbox: &HashMap<Uuid, i64>,
) -> Result<Submitted> {
    Ok(Submitted {
        event: next_event(events)?,
        outbox_id: outbox.get(&s.action.uuid).copied(),
        action: s.action,
    })
}

/// Writes `changes` and checks that the driver wrote all of it.
async fn write(tx: &mut dyn Driver, changes: Changeset) -> Result<Written> {
    let expected = (changes.events.len(), changes.outbox.len());
    tx.write(changes).await?.check(expected)
}

fn next_event(events: &mut impl Iterator<Item = Event>) -> Result<Event> {
    events
        .next()
        .ok_or_else(|| Error::Internal("an event of the changeset is missing".into()))
}

/// Makes a batch of state changes ([`crate::store::ActionStore::transition`],
/// [`crate::store::ActionStore::transition_many`],
/// [`crate::store::ActionStore::cancel`]): each request gets its own
/// outcome — `NotFound` (missing, or not visible in `scope`), a conflict
/// (the rules refuse it, or its lease moved on) — and a final state promotes
/// the next Pending action on the object. An `Err` means the transaction
/// failed as a whole.
pub async fn transition(
    tx: &mut dyn Driver,
    scope: Scope<'_>,
    requests: &[TransitionRequest],
) -> Result<Vec<Result<Transitioned>>> {
    let uuids: Vec<Uuid> = requests.iter().map(|r| r.uuid).collect();
    let visible: Vec<ActionHead> = tx
        .actions(&uuids, false)
        .await?
        .into_iter()
        .filter(|h| scope.allows(&h.namespace))
        .collect();
    let mut objects: Vec<Uuid> = visible.iter().map(|h| h.object_uuid).collect();
    objects.sort();
    objects.dedup();
    tx.lock_objects(&objects).await?;
    let known: Vec<Uuid> = visible.iter().map(|h| h.uuid).collect();
    let heads = if known.is_empty() {
        HashMap::new()
    } else {
        tx.actions(&known, true)
            .await?
            .into_iter()
            .map(|h| (h.uuid, h))
            .collect()
    };
    apply(tx, &heads, requests).await
}

/// [`transition`] once the heads are read under the locks.
async fn apply(
    tx: &mut dyn Driver,
    heads: &HashMap<Uuid, ActionHead>,
    requests: &[TransitionRequest],
) -> Result<Vec<Result<Transitioned>>> {
    // The rules first: each request's target and whether it may be written.
    let decided: Vec<Result<StateUpdate>> = requests
        .iter()
        .map(|r| {
            let head = heads.get(&r.uuid).ok_or_else(|| not_found(r.uuid))?;
            let to = match r.target {
                Target::State(s) => s,
                Target::Cancel => cancel_target(r.uuid, head.state)?,
            };
            ActionState::check_transition(head.state, to)?;
            if r.token.is_some() && r.token != head.lease {
                return Err(Error::Transition(IllegalTransition { from: head.state, to }));
            }
            Ok(StateUpdate {
                uuid: r.uuid,
                to,
                token: r.token,
            })
        })
        .collect();
    let updates: Vec<StateUpdate> = decided.iter().filter_map(|d| d.as_ref().ok().copied()).collect();
    let mut changed: HashMap<Uuid, StoredAction> = if updates.is_empty() {
        HashMap::new()
    } else {
        tx.update_states(&updates)
            .await?
            .into_iter()
            .map(|s| (s.action.uuid, s))
            .collect()
    };
    // Then one promotion per object an action left.
    let mut freed: Vec<Uuid> = updates
        .iter()
        .filter(|u| u.to.is_final())
        .filter_map(|u| changed.get(&u.uuid).map(|s| s.action.object_uuid))
        .collect();
    freed.sort();
    freed.dedup();
    let mut promoted: HashMap<Uuid, StoredAction> = if freed.is_empty() {
        HashMap::new()
    } else {
        tx.promote(&freed)
            .await?
            .into_iter()
            .map(|s| (s.action.object_uuid, s))
            .collect()
    };
    // Then the queues that moved: behind each action that left one, the
    // first still waiting.
    let left: Vec<Uuid> = promoted
        .values()
        .map(|p| p.action.uuid)
        .chain(
            updates
                .iter()
                .filter(|u| changed.contains_key(&u.uuid))
                .filter(|u| heads.get(&u.uuid).is_some_and(|h| leaves_queue(h.state, u.to)))
                .map(|u| u.uuid),
        )
        .collect();
    let mut moved: HashMap<Uuid, StoredAction> = if left.is_empty() {
        HashMap::new()
    } else {
        tx.next_waiting(&left).await?.into_iter().collect()
    };
    let mut moved_once = std::collections::HashSet::new();
    // Everything recorded in the order one change after the other would
    // have recorded it: each action's change, its promotion, then the
    // queue move behind it.
    let mut changes = Changeset::default();
    let mut outcomes: Vec<Result<Outcome>> = Vec::with_capacity(requests.len());
    for d in decided {
        let outcome = d.and_then(|u| {
            // The guard refused what the rules allowed: only a duplicate
            // request in the batch can do that.
            let from = heads.get(&u.uuid).map_or(u.to, |h| h.state);
            let stored = changed
                .remove(&u.uuid)
                .ok_or(Error::Transition(IllegalTransition { from, to: u.to }))?;
            let next = if u.to.is_final() {
                promoted.remove(&stored.action.object_uuid)
            } else {
                None
            };
            changes.action(&stored, EventKind::Update, false);
            if let Some(n) = &next {
                changes.action(n, EventKind::Update, true);
            }
            let leaver = next
                .as_ref()
                .map(|n| n.action.uuid)
                .or(leaves_queue(from, u.to).then_some(u.uuid));
            let queue_moved = leaver
                .and_then(|l| moved.remove(&l))
                .filter(|w| moved_once.insert(w.action.uuid));
            if let Some(w) = &queue_moved {
                changes.queue_moved(w);
            }
            Ok(Outcome {
                stored,
                next,
                queue_moved: queue_moved.is_some(),
            })
        });
        outcomes.push(outcome);
    }
    let written = write(tx, changes).await?;
    let (mut events, outbox) = written.into_parts();
    let mut out = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        out.push(match o {
            Err(e) => Err(e),
            Ok(o) => Ok(Transitioned {
                event: next_event(&mut events)?,
                promoted: o.next.map(|n| submitted(n, &mut events, &outbox)).transpose()?,
                queue_moved: o.queue_moved.then(|| next_event(&mut events)).transpose()?,
                action: o.stored.action,
            }),
        });
    }
    Ok(out)
}

/// What [`apply`] recorded for one request, before the events are numbered.
struct Outcome {
    /// The action as changed.
    stored: StoredAction,
    /// The action promoted behind it.
    next: Option<StoredAction>,
    /// Whether a queue-move event follows.
    queue_moved: bool,
}

fn not_found(uuid: Uuid) -> Error {
    Error::NotFound(format!("action {uuid}"))
}

/// What [`reap`] made of one expired lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Expired {
    /// Handed back for another attempt.
    Requeued(Box<Submitted>),
    /// Ended: Failed (claims used up) or Canceled (a cancel was under way).
    Ended(Box<Transitioned>),
}

/// Applies [`on_expired_lease`] to `uuid` if its lease has still expired
/// once its object is locked (a heartbeat or a finish may have won: then
/// `None`).
pub async fn reap(tx: &mut dyn Driver, uuid: Uuid, max_claims: i32) -> Result<Option<Expired>> {
    let Some(head) = tx.actions(&[uuid], false).await?.pop() else {
        return Ok(None);
    };
    tx.lock_objects(&[head.object_uuid]).await?;
    let Some(head) = tx.actions(&[uuid], true).await?.pop() else {
        return Ok(None);
    };
    let Some(token) = head.lease.filter(|_| head.lease_expired) else {
        return Ok(None);
    };
    let to = match on_expired_lease(head.state, head.claims, max_claims) {
        LeaseExpiry::Requeue => {
            return Ok(hand_back(tx, uuid, token)
                .await?
                .map(|s| Expired::Requeued(Box::new(s))))
        }
        LeaseExpiry::Fail => ActionState::Failed,
        LeaseExpiry::Cancel => ActionState::Canceled,
    };
    let request = TransitionRequest {
        uuid,
        target: Target::State(to),
        token: Some(token),
    };
    let heads = HashMap::from([(uuid, head)]);
    let ended = apply(tx, &heads, &[request]).await?.pop();
    match ended {
        Some(Ok(t)) => Ok(Some(Expired::Ended(Box::new(t)))),
        Some(Err(e)) => Err(e),
        None => Ok(None),
    }
}

/// Gives a leased action back for another worker to claim
/// ([`crate::store::ActionStore::release_lease`]): the lease is cleared if
/// `token` still holds it, and the hand-back is recorded with an outbox row.
pub async fn hand_back(tx: &mut dyn Driver, uuid: Uuid, token: LeaseToken) -> Result<Option<Submitted>> {
    let Some(stored) = tx.release(uuid, token).await? else {
        return Ok(None);
    };
    let mut changes = Changeset::default();
    changes.action(&stored, EventKind::Update, true);
    let written = write(tx, changes).await?;
    let (mut events, outbox) = written.into_parts();
    submitted(stored, &mut events, &outbox).map(Some)
}

/// A request to change an object, with the action that records it.
#[derive(Debug, Clone)]
pub struct ObjectRequest {
    /// The object: for a create, the new object's uuid.
    pub uuid: Uuid,
    /// Its type.
    pub object_type: String,
    /// Who may see it (an update or termination of an object the caller
    /// cannot see is "not found").
    pub lookup: ObjectLookup,
    /// The change.
    pub change: ObjectChange,
    /// The action that records the change; its object fields are filled
    /// from the object as written.
    pub action: NewAction,
}

/// The outcome of an object change.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectChanged {
    /// The object as written.
    pub object: Object,
    /// Its event.
    pub event: Event,
    /// The action that records the change.
    pub action: Submitted,
}

/// Makes an object change ([`crate::store::ObjectStore::change_object`]):
/// the object, its event, its system log entry and its action, in one
/// transaction. An update or a termination locks the object, reads it and
/// applies [`ObjectChange::apply`] to what is stored, and its write is
/// guarded against a termination, so a `PATCH` racing a `DELETE` cannot
/// bring a terminated object back.
pub async fn change_object(tx: &mut dyn Driver, request: ObjectRequest) -> Result<ObjectChanged> {
    let ObjectRequest {
        uuid,
        object_type,
        lookup,
        change,
        mut action,
    } = request;
    let object = match &change {
        ObjectChange::Create(new) => {
            tx.insert_object(new).await?;
            new.clone()
        }
        _ => {
            tx.lock_objects(&[uuid]).await?;
            let found = tx.objects(&[uuid]).await?.pop();
            let current = lookup.find(&object_type, uuid, found)?;
            let changed = change.apply(current, chrono::Utc::now())?;
            tx.update_object(&changed)
                .await?
                .ok_or_else(|| Error::Conflict(format!("{object_type} {uuid} has been terminated")))?
        }
    };
    let mut changes = Changeset::default();
    changes.object(
        &object,
        change.event_kind(),
        super::object_log_entry(&object, change.done(), &action.user),
    );
    action.set_object(&object);
    let stored = record_new(tx, std::slice::from_ref(&action), &mut changes).await?;
    let written = write(tx, changes).await?;
    let (mut events, outbox) = written.into_parts();
    let event = next_event(&mut events)?;
    let recorded = stored
        .into_iter()
        .next()
        .ok_or_else(|| Error::Internal("the object's action was not recorded".into()))?;
    Ok(ObjectChanged {
        object,
        event,
        action: submitted(recorded, &mut events, &outbox)?,
    })
}

/// Stores an object with its `create` event and no action: for imports and
/// fixtures ([`crate::store::ObjectStore::insert_object`]).
pub async fn insert_object(tx: &mut dyn Driver, object: &Object) -> Result<Event> {
    tx.insert_object(object).await?;
    let changes = Changeset {
        events: vec![super::object_event(
            object,
            EventKind::Create,
            super::changeset::UNSTAMPED,
        )],
        ..Default::default()
    };
    let written = write(tx, changes).await?;
    let (mut events, _) = written.into_parts();
    next_event(&mut events)
}
