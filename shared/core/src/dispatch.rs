//! Getting committed work onto the broker, and keeping it there.
//!
//! [`Dispatcher::dispatch`] publishes the jobs of freshly committed outbox rows
//! (with publisher confirms) and then marks the rows sent. If the process dies
//! between the commit and the confirm, the [`OutboxRelay`] finds the unsent rows
//! and publishes them again; it also re-publishes In progress and Canceling
//! actions that no worker claimed (a message the broker confirmed and then
//! lost), but only once the jobs queue is empty, so a backlog is never
//! multiplied.
//!
//! **Invariant:** a job is published only after its action is committed, and an
//! outbox row is marked sent only after the broker confirmed its job.

use crate::action::{Action, NewAction};
use crate::broker::DynBroker;
use crate::event::Event;
use crate::group_commit::{GroupCommit, Lanes};
use crate::health::Health;
use crate::lifecycle::engine::ObjectChanged;
use crate::messages::{Control, JobMessage, Update};
use crate::shutdown::Shutdown;
use crate::state::ActionState;
use crate::store::{DynStore, ObjectLookup, Submission, Submitted, Transitioned};
use crate::Result;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use uuid::Uuid;

/// Publishes jobs and updates for what the store committed.
#[derive(Clone)]
pub struct Dispatcher {
    store: DynStore,
    broker: DynBroker,
    marks: Arc<Mutex<SentMarks>>,
    health: Health,
    batch_interval: Duration,
}

/// Outbox rows confirmed but not yet marked sent ([`Dispatcher::mark_sent`]).
#[derive(Default)]
struct SentMarks {
    ids: Vec<i64>,
    /// A task is waiting to write `ids`.
    flushing: bool,
}

impl Dispatcher {
    /// A dispatcher over a store and a broker.
    pub fn new(store: DynStore, broker: DynBroker) -> Self {
        Dispatcher {
            store,
            broker,
            marks: Arc::default(),
            health: Health::new(),
            batch_interval: crate::config::DEFAULT_BATCH_INTERVAL,
        }
    }

    /// Paces this process's batch transactions (submissions and final
    /// writes) at `interval` (`[database] batch_interval`, by default
    /// [`crate::config::DEFAULT_BATCH_INTERVAL`]; see [`crate::group_commit`]).
    pub fn with_batch_interval(mut self, interval: Duration) -> Self {
        self.batch_interval = interval;
        self
    }

    /// The lanes of this process's batch transactions: as many as the store
    /// asks for, paced at the configured interval.
    pub fn lanes(&self) -> Lanes {
        Lanes::up_to(self.store.batch_lanes()).paced(self.batch_interval)
    }

    /// The process's conditions, reported on `/readyz`.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The store.
    pub fn store(&self) -> &DynStore {
        &self.store
    }

    /// The broker.
    pub fn broker(&self) -> &DynBroker {
        &self.broker
    }

    /// Publishes the jobs of outbox rows `(id, action)` and marks them sent.
    pub async fn dispatch(&self, rows: &[(i64, Uuid)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let actions: Vec<Uuid> = rows.iter().map(|(_, a)| *a).collect();
        self.broker.publish_jobs(&JobMessage::batches(&actions)).await?;
        let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
        self.store.mark_outbox_sent(&ids).await
    }

    /// Publishes what committed changes recorded — their events, then their
    /// jobs (with confirms), then the cancel messages of actions that became
    /// Canceling — and marks the confirmed outbox rows sent. The one method
    /// every caller publishes a change through; best effort: a failed
    /// publish is logged and left to the relay (the change is committed).
    pub async fn publish<C: Committed>(&self, done: &[&C]) {
        self.publish_events_of(done).await;
        let confirmed = self.publish_jobs_of(done).await;
        self.mark_sent(&confirmed).await;
        for action in done.iter().flat_map(|c| c.cancels()) {
            if let Err(e) = self.broker.publish_control(&Control::Cancel { action }).await {
                tracing::warn!(action = %action, error = %e, "cancel message not published");
            }
        }
    }

    /// The first phase of [`Dispatcher::publish`], for the group commits
    /// that publish a batch's events while it holds its slot (so with one
    /// lane they go out in commit order): counts the changed actions and
    /// publishes all the events in `seq` order, as one update.
    pub async fn publish_events_of<C: Committed>(&self, done: &[&C]) {
        let mut events: Vec<Event> = Vec::new();
        for c in done {
            for action in c.actions() {
                count_action(action);
            }
            events.extend(c.events().into_iter().cloned());
        }
        events.sort_by_key(|e| e.seq);
        self.publish_events(&events).await;
    }

    /// The second phase of [`Dispatcher::publish`]: the jobs of the actions
    /// `done` dispatched, with confirms. Returns the outbox rows the broker
    /// confirmed, for [`Dispatcher::mark_sent`] (none when the publish
    /// failed: that is logged and left to the relay).
    pub async fn publish_jobs_of<C: Committed>(&self, done: &[&C]) -> Vec<i64> {
        let rows: Vec<(i64, Uuid)> = done.iter().flat_map(|c| c.jobs()).collect();
        if rows.is_empty() {
            return Vec::new();
        }
        let actions: Vec<Uuid> = rows.iter().map(|(_, a)| *a).collect();
        match self.broker.publish_jobs(&JobMessage::batches(&actions)).await {
            Ok(()) => rows.iter().map(|(id, _)| *id).collect(),
            Err(e) => {
                let actions: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
                tracing::warn!(actions = ?actions, error = %e, "publish failed; the outbox relay will retry");
                Vec::new()
            }
        }
    }

    /// Marks confirmed outbox rows sent, at most [`MARK_SENT_DELAY`] later,
    /// together with those of every other batch confirmed meanwhile: one
    /// statement (and commit) for many batches instead of one per batch.
    /// Bookkeeping only: a row left unmarked (the write failed, or the
    /// process died first) is published again by the relay once it is
    /// [`RELAY_MIN_AGE`] old, and the duplicate job cannot claim.
    pub async fn mark_sent(&self, ids: &[i64]) {
        if ids.is_empty() {
            return;
        }
        let start = match self.marks.lock() {
            Ok(mut m) => {
                m.ids.extend_from_slice(ids);
                !std::mem::replace(&mut m.flushing, true)
            }
            Err(_) => return,
        };
        if start {
            let me = self.clone();
            tokio::spawn(async move { me.flush_marks().await });
        }
    }

    /// Writes the pending marks every [`MARK_SENT_DELAY`] until a wait
    /// brings none.
    async fn flush_marks(self) {
        loop {
            tokio::time::sleep(MARK_SENT_DELAY).await;
            let ids = match self.marks.lock() {
                Ok(mut m) if m.ids.is_empty() => {
                    m.flushing = false;
                    return;
                }
                Ok(mut m) => std::mem::take(&mut m.ids),
                Err(_) => return,
            };
            for chunk in ids.chunks(MAX_MARKS_PER_STATEMENT) {
                if let Err(e) = self.store.mark_outbox_sent(chunk).await {
                    tracing::warn!(rows = chunk.len(), error = %e, "outbox rows not marked sent; the relay will publish them again");
                }
            }
        }
    }

    /// Publishes events as updates (best effort: the events are stored, and
    /// stream clients can resume from the store): one event alone, several
    /// as [`Update::Events`] of at most [`MAX_EVENTS_PER_UPDATE`].
    pub async fn publish_events(&self, events: &[Event]) {
        for chunk in events.chunks(MAX_EVENTS_PER_UPDATE) {
            let update = match chunk {
                [one] => Update::Event(one.clone()),
                many => Update::Events {
                    events: many.to_vec(),
                },
            };
            if let Err(err) = self.broker.publish_update(&update).await {
                tracing::debug!(error = %err, "update publish failed");
            }
        }
    }
}

/// A committed change, as the dispatcher publishes it ([`Dispatcher::publish`]).
pub trait Committed: Sync {
    /// The events it recorded.
    fn events(&self) -> Vec<&Event>;
    /// The actions whose state it recorded (counted in the metrics).
    fn actions(&self) -> Vec<&Action>;
    /// The outbox rows `(id, action)` of the jobs it dispatched.
    fn jobs(&self) -> Vec<(i64, Uuid)>;
    /// The actions whose worker must be told to stop (they became Canceling).
    fn cancels(&self) -> Vec<Uuid> {
        Vec::new()
    }
}

impl Committed for Submitted {
    fn events(&self) -> Vec<&Event> {
        vec![&self.event]
    }
    fn actions(&self) -> Vec<&Action> {
        vec![&self.action]
    }
    fn jobs(&self) -> Vec<(i64, Uuid)> {
        self.outbox_id
            .map(|id| (id, self.action.uuid))
            .into_iter()
            .collect()
    }
}

impl Committed for Transitioned {
    fn events(&self) -> Vec<&Event> {
        std::iter::once(&self.event)
            .chain(self.promoted.as_ref().map(|p| &p.event))
            .chain(self.queue_moved.as_ref())
            .collect()
    }
    fn actions(&self) -> Vec<&Action> {
        std::iter::once(&self.action)
            .chain(self.promoted.as_ref().map(|p| &p.action))
            .collect()
    }
    fn jobs(&self) -> Vec<(i64, Uuid)> {
        self.promoted.as_ref().map(|p| p.jobs()).unwrap_or_default()
    }
    fn cancels(&self) -> Vec<Uuid> {
        (self.action.state == ActionState::Canceling)
            .then_some(self.action.uuid)
            .into_iter()
            .collect()
    }
}

impl Committed for ObjectChanged {
    fn events(&self) -> Vec<&Event> {
        vec![&self.event, &self.action.event]
    }
    fn actions(&self) -> Vec<&Action> {
        vec![&self.action.action]
    }
    fn jobs(&self) -> Vec<(i64, Uuid)> {
        self.action.jobs()
    }
}

/// Counts a recorded state change in `stevedore_actions_total{state,action}`
/// (`action` is the operation's name, e.g. "Service Start": bounded by the config).
fn count_action(action: &Action) {
    metrics::counter!(
        ACTIONS_TOTAL,
        "state" => action.state.as_str(),
        "action" => action.action.clone()
    )
    .increment(1);
}

/// How long a confirmed outbox row waits to be marked sent, so that the
/// marks of all batches confirmed meanwhile share one statement. Far below
/// [`RELAY_MIN_AGE`], so the relay does not republish rows about to be marked.
pub const MARK_SENT_DELAY: Duration = Duration::from_millis(100);
/// Most outbox rows one marking statement names.
const MAX_MARKS_PER_STATEMENT: usize = 5_000;

/// Most events one update message carries.
pub const MAX_EVENTS_PER_UPDATE: usize = 256;

/// Name of the counter of recorded action state changes.
pub const ACTIONS_TOTAL: &str = "stevedore_actions_total";

/// How often the relay looks for unsent outbox rows.
pub const RELAY_INTERVAL: Duration = Duration::from_secs(2);
/// Outbox rows younger than this are left to the request that wrote them, so
/// the relay does not race every normal publish.
pub const RELAY_MIN_AGE: Duration = Duration::from_secs(5);
/// An In progress (or Canceling) action nobody claimed for this long is
/// published again, once the jobs queue is empty ([`OutboxRelay::run_once`]).
pub const REDISPATCH_AFTER: Duration = Duration::from_secs(120);
/// Rows handled per relay pass.
const RELAY_BATCH: i64 = 500;

/// Re-publishes committed-but-unconfirmed jobs and never-claimed actions.
pub struct OutboxRelay {
    dispatcher: Dispatcher,
    interval: Duration,
    min_age: Duration,
    redispatch_after: Duration,
}

impl OutboxRelay {
    /// A relay with the default timings.
    pub fn new(dispatcher: Dispatcher) -> Self {
        OutboxRelay {
            dispatcher,
            interval: RELAY_INTERVAL,
            min_age: RELAY_MIN_AGE,
            redispatch_after: REDISPATCH_AFTER,
        }
    }

    /// Overrides the timings (tests use short ones).
    pub fn with_timings(mut self, interval: Duration, min_age: Duration, redispatch_after: Duration) -> Self {
        self.interval = interval;
        self.min_age = min_age;
        self.redispatch_after = redispatch_after;
        self
    }

    /// One pass: publish what is due. Returns how many jobs were published.
    ///
    /// Unsent outbox rows are always published. Actions that waited longer
    /// than `redispatch_after` for a worker are published again **only when
    /// the jobs queue has no ready message**: while any job waits there, the
    /// workers have not reached the end of the queue, and an action's
    /// message may still be in it, so republishing would only add copies
    /// (a stopped worker pool with a backlog keeps its backlog, not a copy
    /// of it every pass). Once the queue is drained, an action still
    /// unclaimed lost its message, and gets one new message per
    /// `redispatch_after`.
    pub async fn run_once(&self) -> Result<usize> {
        let store = self.dispatcher.store();
        let unsent = store.unsent_outbox(self.min_age, RELAY_BATCH).await?;
        let rows: Vec<(i64, Uuid)> = unsent.iter().map(|e| (e.id, e.action_uuid)).collect();
        self.dispatcher.dispatch(&rows).await?;
        let broker = self.dispatcher.broker();
        if broker.jobs_depth().await? > 0 {
            return Ok(rows.len());
        }
        let stale = store
            .redispatch_unclaimed(self.redispatch_after, RELAY_BATCH)
            .await?;
        if !stale.is_empty() {
            tracing::warn!(
                count = stale.len(),
                "re-publishing actions no worker claimed (the jobs queue is empty: their messages were lost)"
            );
            broker.publish_jobs(&JobMessage::batches(&stale)).await?;
        }
        Ok(rows.len() + stale.len())
    }

    /// Runs passes until shutdown; errors are logged and the next pass retries.
    pub async fn run(self, shutdown: Shutdown) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            match self.run_once().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(published = n, "outbox relay re-published jobs"),
                Err(e) => tracing::warn!(error = %e, "outbox relay pass failed"),
            }
        }
    }
}

/// Most submissions committed together.
pub const MAX_SUBMIT_BATCH: usize = 256;

type SubmitRequest = (Submission, Instant, oneshot::Sender<Result<Submitted>>);

/// Histogram: actions per submission batch.
pub const SUBMIT_BATCH_SIZE: &str = "stevedore_submit_batch_size";
/// Histogram: how long a submission waited for its batch to start.
pub const SUBMIT_WAIT_SECONDS: &str = "stevedore_submit_wait_seconds";
/// Histogram: a submission batch's transaction, begin to commit.
pub const SUBMIT_COMMIT_SECONDS: &str = "stevedore_submit_commit_seconds";
/// Histogram: a submission batch's job publish, until the broker confirmed.
pub const SUBMIT_CONFIRM_SECONDS: &str = "stevedore_submit_confirm_seconds";

/// Group commit of submissions ([`GroupCommit`]): requests queue while a
/// batch commits, and the next batch takes everything queued (up to
/// [`MAX_SUBMIT_BATCH`]) into one transaction. Under light load a batch is
/// one request and adds no delay; under heavy load one commit (one fsync,
/// one hold of the events lock) serves hundreds of requests. Each batch's
/// jobs are then published together with pipelined confirms, and each
/// caller gets its own action once its job is confirmed (the outbox rows are
/// marked sent after that), while the next batch is already committing.
///
/// Up to [`Store::batch_lanes`] batches are in flight at once, a second
/// only for a deep backlog ([`crate::group_commit::Lanes`]).
///
/// [`Store::batch_lanes`]: crate::store::Store::batch_lanes
#[derive(Clone)]
pub struct SubmitBatcher {
    batches: GroupCommit<SubmitRequest>,
}

impl SubmitBatcher {
    /// Starts the batching task, with as many lanes as the store asks for
    /// (it ends when every handle is dropped).
    pub fn spawn(dispatcher: Dispatcher) -> Self {
        let lanes = dispatcher.lanes();
        Self::spawn_with(dispatcher, lanes)
    }

    /// [`SubmitBatcher::spawn`] with the lanes given.
    pub fn spawn_with(dispatcher: Dispatcher, lanes: Lanes) -> Self {
        SubmitBatcher {
            batches: GroupCommit::spawn(lanes, MAX_SUBMIT_BATCH, move |batch| {
                commit_submissions(dispatcher.clone(), batch)
            }),
        }
    }

    /// Records an action (in some batch), publishes its job and events, and
    /// returns it. A failed publish is left to the outbox relay, as with
    /// [`Dispatcher::publish`].
    pub async fn submit(&self, new: NewAction) -> Result<Submitted> {
        self.send(Submission {
            action: new,
            lookup: None,
        })
        .await
    }

    /// [`SubmitBatcher::submit`] for an action whose object the caller named
    /// only by `object_uuid` and `object_type`: the batch looks the object up
    /// (one statement for all its requests) and fills in the action's object
    /// fields; not found, or terminated, is this request's error alone
    /// ([`ObjectLookup::resolve`]).
    pub async fn submit_on(&self, new: NewAction, lookup: ObjectLookup) -> Result<Submitted> {
        self.send(Submission {
            action: new,
            lookup: Some(lookup),
        })
        .await
    }

    async fn send(&self, submission: Submission) -> Result<Submitted> {
        let (reply, rx) = oneshot::channel();
        self.batches
            .send((submission, Instant::now(), reply))
            .await
            .map_err(|_| crate::Error::Broker("the submission queue is closed".into()))?;
        rx.await
            .map_err(|_| crate::Error::Broker("the submission was dropped".into()))?
    }
}

/// Records one batch of submissions and publishes its events, then its jobs
/// (waiting for confirms) and the answers on a task of their own, so that
/// the lane is free for the next batch.
async fn commit_submissions(dispatcher: Dispatcher, batch: Vec<SubmitRequest>) {
    let started = Instant::now();
    let waited = metrics::histogram!(SUBMIT_WAIT_SECONDS);
    let mut submissions = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for (submission, queued, reply) in batch {
        waited.record(started.duration_since(queued).as_secs_f64());
        submissions.push(submission);
        replies.push(reply);
    }
    metrics::histogram!(SUBMIT_BATCH_SIZE).record(submissions.len() as f64);
    let store = dispatcher.store();
    let results: Vec<Result<Submitted>> = match store.submit_batch(&submissions).await {
        Ok(all) => all,
        // One bad request must not fail its neighbours: record them one by one.
        Err(_) if submissions.len() > 1 => {
            let mut each = Vec::with_capacity(submissions.len());
            for s in &submissions {
                match store.submit_batch(std::slice::from_ref(s)).await {
                    Ok(one) => each.extend(one),
                    Err(e) => each.push(Err(e)),
                }
            }
            each
        }
        Err(e) => vec![Err(e)],
    };
    metrics::histogram!(SUBMIT_COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
    // Events while this batch still holds its slot, so that with one lane
    // they go out in commit order; the jobs (which wait for confirms) and
    // the answers on their own task, while the next batch commits.
    let done: Vec<&Submitted> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    dispatcher.publish_events_of(&done).await;
    tokio::spawn(async move {
        let done: Vec<&Submitted> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let publishing = Instant::now();
        let confirmed = dispatcher.publish_jobs_of(&done).await;
        metrics::histogram!(SUBMIT_CONFIRM_SECONDS).record(publishing.elapsed().as_secs_f64());
        // Committed and confirmed: the callers may answer now; marking
        // the outbox rows sent is bookkeeping (see `mark_sent`).
        for (r, reply) in results.into_iter().zip(replies) {
            let _ = reply.send(r);
        }
        dispatcher.mark_sent(&confirmed).await;
    });
}
