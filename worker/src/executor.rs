//! Running one job: claim → ack → run the handler (with heartbeat, log
//! writer, timeout, automatic retries) → final state → publish.
//!
//! **Invariant:** a worker writes to an action only under its lease token; a
//! worker that lost its lease (the reaper gave the action to someone else)
//! stops its handler and writes nothing more.

use crate::finisher::Finisher;
use crate::handlers::{self, HandlerContext, Outcome};
use crate::progress::{ProgressBoard, ProgressSink};
use backon::BackoffBuilder;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stevedore_core::action::Action;
use stevedore_core::broker::JobDelivery;
use stevedore_core::config::{Operation, Operations, WorkerSettings, FENCE_MARGIN};
use stevedore_core::dispatch::Dispatcher;
use stevedore_core::health::Health;
use stevedore_core::logline::{NewLogLine, StreamType};
use stevedore_core::messages::JobMessage;
use stevedore_core::messages::Update;
use stevedore_core::state::ActionState;
use stevedore_core::store::{Claim, Finish, LeaseToken};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

/// Log lines written to the store per batch at most.
const LOG_BATCH_LINES: usize = 256;
/// How long a log line may wait for its batch to fill before it is written.
const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// How often a failed heartbeat is retried (at most; never less often than
/// the configured heartbeat).
const HEARTBEAT_RETRY: Duration = Duration::from_millis(250);
/// How long a final state write is retried through database errors, at least.
const FINAL_WRITE_PATIENCE: Duration = Duration::from_secs(60);
/// The longest pause between claim attempts while a job is held through a
/// database outage.
const OUTAGE_RETRY_MAX: Duration = Duration::from_secs(5);
/// Attempts to hand an action back at shutdown.
const HAND_BACK_ATTEMPTS: u32 = 3;

/// Why a running action's token was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Canceled,
    Timeout,
    LeaseLost,
    Shutdown,
}

/// Why a running action was stopped, set once by whoever stops it first.
type SharedReason = Arc<Mutex<Option<StopReason>>>;

/// A running action's stop handle.
type Running = (CancellationToken, SharedReason);

/// Runs jobs; shared by all the worker's tasks.
pub struct Executor {
    dispatcher: Dispatcher,
    ops: Arc<Operations>,
    settings: WorkerSettings,
    owner: String,
    running: Mutex<HashMap<Uuid, Running>>,
    finisher: Finisher,
    held: HeldJobs,
    release_held: CancellationToken,
    progress: Arc<ProgressBoard>,
}

impl Executor {
    /// An executor that claims as `owner`. Starts its [`Finisher`] and its
    /// progress flusher, so it must be called inside a Tokio runtime.
    pub fn new(
        dispatcher: Dispatcher,
        ops: Arc<Operations>,
        settings: WorkerSettings,
        owner: String,
    ) -> Self {
        let progress = ProgressBoard::new();
        crate::progress::spawn_flusher(&progress, dispatcher.clone(), settings.progress_interval);
        Executor {
            finisher: Finisher::spawn(dispatcher.clone()),
            progress,
            dispatcher,
            ops,
            settings,
            owner,
            running: Mutex::new(HashMap::new()),
            held: HeldJobs::default(),
            release_held: CancellationToken::new(),
        }
    }

    /// Asks a running action to stop because a user cancelled it. Returns
    /// whether this worker was running it.
    pub fn cancel(&self, action: Uuid) -> bool {
        self.stop(action, StopReason::Canceled)
    }

    /// Stops every running action (shutdown deadline passed).
    pub fn stop_all(&self) {
        let ids: Vec<Uuid> = self
            .running
            .lock()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        for id in ids {
            self.stop(id, StopReason::Shutdown);
        }
    }

    /// The actions running now.
    pub fn running_ids(&self) -> Vec<Uuid> {
        self.running
            .lock()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    /// How many actions run now.
    pub fn running_count(&self) -> usize {
        self.running.lock().map(|m| m.len()).unwrap_or(0)
    }

    fn stop(&self, action: Uuid, why: StopReason) -> bool {
        let Ok(map) = self.running.lock() else {
            return false;
        };
        match map.get(&action) {
            Some((token, reason)) => {
                if let Ok(mut r) = reason.lock() {
                    r.get_or_insert(why);
                }
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Handles one delivery from the jobs queue: claims as many of its
    /// actions as `permits` allow (one statement), starts them, hands the
    /// rest on in a new message, and acks.
    ///
    /// While the database cannot be reached the delivery is **held**, not
    /// handed back: the claim is retried with backoff, for at most
    /// `[worker] outage_hold`, so an outage does not burn the queue's
    /// delivery limit (a hand-back counts, a held message does not). The
    /// permits stay taken meanwhile, so the worker takes no more messages
    /// than its prefetch.
    pub async fn handle(self: &Arc<Self>, delivery: JobDelivery, mut permits: Vec<OwnedSemaphorePermit>) {
        let actions = &delivery.job.actions;
        let take = permits.len().min(actions.len());
        let (now, later) = actions.split_at(take);
        let Some(claims) = self.claim_or_hold(now).await else {
            if let Err(e) = delivery.acker.requeue().await {
                tracing::debug!(error = %e, "handing a held job back failed; the broker will redeliver it");
            }
            return;
        };
        if claims.len() < now.len() {
            // Finished, cancelled, or leased by a live worker (a duplicate
            // delivery): nothing to do. The reaper covers a dead holder.
            tracing::debug!(
                skipped = now.len() - claims.len(),
                "jobs not claimable; dropping the duplicates"
            );
        }
        // The claims are durable: from here the leases, not the message,
        // protect them. Start them — each with its heartbeat — before
        // anything that can stall on the broker, so no lease runs out while
        // a publish waits.
        permits.truncate(claims.len());
        for (claim, permit) in claims.into_iter().zip(permits) {
            let me = self.clone();
            tokio::spawn(async move {
                me.run_claimed(claim).await;
                drop(permit);
            });
        }
        // Actions this worker has no room for go back to the queue first, as
        // a message of their own, so acking loses none of them. A lost ack
        // only causes duplicates that cannot claim.
        let settle = if later.is_empty() {
            delivery.acker.ack().await
        } else {
            match self
                .dispatcher
                .broker()
                .publish_jobs(&JobMessage::batches(later))
                .await
            {
                Ok(()) => delivery.acker.ack().await,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand on the unclaimed rest; requeueing the message");
                    delivery.acker.requeue().await
                }
            }
        };
        if let Err(e) = settle {
            tracing::debug!(error = %e, "settling the job message failed after claim");
        }
    }

    /// Claims `uuids`, retrying through database errors for at most
    /// `outage_hold` (or until [`Executor::release_held`]); `None` when the
    /// delivery should be handed back.
    async fn claim_or_hold(&self, uuids: &[Uuid]) -> Option<Vec<Claim>> {
        let store = self.dispatcher.store();
        let hold_until = tokio::time::Instant::now() + self.settings.outage_hold;
        let mut delays = outage_retry_delays();
        let mut holding = None;
        loop {
            match store.claim_actions(uuids, &self.owner, self.settings.lease).await {
                Ok(claims) => return Some(claims),
                Err(e) => {
                    let hold = holding.get_or_insert_with(|| self.held.hold(self.dispatcher.health()));
                    hold.failed(&e);
                    if tokio::time::Instant::now() >= hold_until || self.release_held.is_cancelled() {
                        tracing::warn!(actions = uuids.len(), error = %e, "cannot claim; handing the held job back");
                        return None;
                    }
                    let d = delays.next().unwrap_or(OUTAGE_RETRY_MAX);
                    tracing::warn!(actions = uuids.len(), error = %e, retry_in = ?d, "cannot claim; holding the job until the database answers");
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = self.release_held.cancelled() => {}
                    }
                }
            }
        }
    }

    /// Hands back every job message held through a database outage (at
    /// once, instead of after `outage_hold`): the worker is shutting down.
    pub fn release_held(&self) {
        self.release_held.cancel();
    }

    /// Runs a claimed action inside its `action` span (instrumented, not
    /// entered: an entered guard held across awaits would leak the span
    /// into whatever task the thread polls next).
    async fn run_claimed(self: &Arc<Self>, claim: Claim) {
        let span = tracing::info_span!("action", action = %claim.action.uuid, op = %claim.action.action);
        self.run_claimed_in_span(claim).instrument(span).await
    }

    async fn run_claimed_in_span(self: &Arc<Self>, claim: Claim) {
        let Claim { action, token } = claim;
        let uuid = action.uuid;
        let started = std::time::Instant::now();
        let cancel = CancellationToken::new();
        let reason = Arc::new(Mutex::new(None));
        if let Ok(mut m) = self.running.lock() {
            m.insert(uuid, (cancel.clone(), reason.clone()));
        }
        // A cancel requested before this worker registered the action.
        if action.state == ActionState::Canceling {
            self.stop(uuid, StopReason::Canceled);
        }
        let (log_tx, log_rx) = mpsc::channel(LOG_BATCH_LINES * 4);
        let budget = LogBudget::new(self.settings.max_log_bytes);
        let writer = tokio::spawn(log_writer(
            self.dispatcher.clone(),
            action.clone(),
            token,
            log_rx,
            budget,
        ));
        let heartbeat = tokio::spawn(heartbeat(self.clone(), uuid, token));
        let progress = self.progress.register(uuid, token);

        let outcome = match self.ops.get(&action.object_type, &action.verb).cloned() {
            // Cancelled before any worker ran it: nothing to run.
            _ if action.state == ActionState::Canceling => Outcome::Canceled,
            Some(op) => {
                self.run_attempts(&action, op, cancel.clone(), log_tx.clone(), progress)
                    .await
            }
            None => Outcome::Failed(format!(
                "no operation is configured for {} {}; check stevedore.toml",
                action.object_type, action.verb
            )),
        };
        if let Ok(mut m) = self.running.lock() {
            m.remove(&uuid);
        }
        let why = reason.lock().ok().and_then(|r| *r);
        let final_state = match (&outcome, why) {
            (_, Some(StopReason::LeaseLost)) => None,
            (Outcome::Canceled, Some(StopReason::Shutdown)) => None,
            (Outcome::Canceled, Some(StopReason::Timeout)) => {
                let limit = self
                    .ops
                    .get(&action.object_type, &action.verb)
                    .map(|o| o.timeout())
                    .unwrap_or_default();
                send_line(
                    &log_tx,
                    StreamType::System,
                    format!("timed out after {}", humantime::format_duration(limit)),
                )
                .await;
                Some(ActionState::Failed)
            }
            (Outcome::Canceled, _) => {
                send_line(&log_tx, StreamType::System, "canceled").await;
                Some(ActionState::Canceled)
            }
            (Outcome::Success, _) => Some(ActionState::Success),
            (Outcome::Failed(msg) | Outcome::Temporary(msg), _) => {
                send_line(&log_tx, StreamType::System, msg.clone()).await;
                Some(ActionState::Failed)
            }
        };
        if why == Some(StopReason::Shutdown) && final_state.is_none() {
            send_line(
                &log_tx,
                StreamType::System,
                "worker shutting down: handing the action back",
            )
            .await;
        }
        drop(log_tx);
        let _ = writer.await;
        // The last progress report, if coalescing held it back, goes in
        // before the final state (which ends the lease that fences it).
        self.progress.retire(uuid, &self.dispatcher).await;
        // The heartbeat keeps renewing the lease until the last write is in,
        // so a slow final write is not mistaken for a dead worker.
        match final_state {
            Some(to) => self.finish(uuid, to, token, started).await,
            None if why == Some(StopReason::Shutdown) => self.hand_back(uuid, token).await,
            None => tracing::info!(
                ?why,
                "stopped without a final state; the lease decides who resumes it"
            ),
        }
        heartbeat.abort();
    }

    /// Writes the final state, fenced by the lease. A database error is
    /// retried: while the token still holds the action nobody else has run
    /// it, so the result stands; once it does not, the write is refused.
    async fn finish(&self, uuid: Uuid, to: ActionState, token: LeaseToken, started: std::time::Instant) {
        let give_up = tokio::time::Instant::now() + (self.settings.lease * 2).max(FINAL_WRITE_PATIENCE);
        let mut delays = store_retry_delays();
        loop {
            match self.finisher.finish(Finish { uuid, to, token }).await {
                Ok(t) => {
                    tracing::info!(state = %t.action.state, "action finished");
                    crate::observe_duration(&t.action, started.elapsed());
                    return;
                }
                Err(stevedore_core::Error::Database(e)) if tokio::time::Instant::now() < give_up => {
                    let d = delays.next().unwrap_or(Duration::from_secs(2));
                    tracing::warn!(error = %e, retry_in = ?d, "final state not written yet; retrying");
                    tokio::time::sleep(d).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "final state not written (cancelled or lease lost meanwhile)");
                    return;
                }
            }
        }
    }

    /// Gives a stopped action back at once (graceful shutdown), so another
    /// worker claims it now instead of after the lease expires.
    async fn hand_back(&self, uuid: Uuid, token: LeaseToken) {
        let mut delays = store_retry_delays();
        for attempt in 1..=HAND_BACK_ATTEMPTS {
            match self.dispatcher.store().release_lease(uuid, token).await {
                Ok(Some(s)) => {
                    tracing::info!("handed back to the other workers");
                    self.dispatcher.publish(&[&s]).await;
                    return;
                }
                Ok(None) => {
                    tracing::info!("not handed back: the lease had moved on or the action ended");
                    return;
                }
                Err(e) if attempt < HAND_BACK_ATTEMPTS => {
                    tracing::warn!(error = %e, "hand-back failed; retrying");
                    tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(1))).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "hand-back failed; the lease will expire instead");
                }
            }
        }
    }

    /// Runs the handler, retrying temporary failures with exponential backoff
    /// and jitter up to the operation's `retries`, each attempt under the
    /// operation's timeout.
    async fn run_attempts(
        self: &Arc<Self>,
        action: &Action,
        op: Operation,
        cancel: CancellationToken,
        log_tx: mpsc::Sender<NewLogLine>,
        progress: ProgressSink,
    ) -> Outcome {
        let handler = handlers::for_operation(&op);
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(60))
            .with_jitter()
            .without_max_times()
            .build();
        let mut attempt = 1u32;
        loop {
            let ctx = HandlerContext::new(
                action.clone(),
                op.clone(),
                cancel.child_token(),
                self.settings.kill_grace,
                self.settings.output_drain,
                log_tx.clone(),
            )
            .with_progress(progress.clone());
            // The timeout cancels the token like a user cancel would, so the
            // handler winds down the same way (exec: SIGTERM, grace, SIGKILL).
            let timer = {
                let me = self.clone();
                let (id, limit) = (action.uuid, op.timeout());
                tokio::spawn(async move {
                    tokio::time::sleep(limit).await;
                    me.stop(id, StopReason::Timeout);
                })
            };
            let outcome = handler.run(&ctx).await;
            timer.abort();
            match outcome {
                Outcome::Temporary(msg) if attempt <= op.retries && !cancel.is_cancelled() => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(60));
                    metrics::counter!(crate::RETRIES_TOTAL, "action" => action.action.clone()).increment(1);
                    send_line(
                        &log_tx,
                        StreamType::System,
                        format!("attempt {attempt} failed temporarily ({msg}); retrying in {:.1}s ({} of {} retries)", delay.as_secs_f64(), attempt, op.retries),
                    )
                    .await;
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = cancel.cancelled() => return Outcome::Canceled,
                    }
                    attempt += 1;
                }
                Outcome::Temporary(msg) if op.retries > 0 => {
                    return Outcome::Failed(format!("{msg}; giving up after {} attempts", attempt));
                }
                other => return other,
            }
        }
    }
}

async fn send_line(tx: &mpsc::Sender<NewLogLine>, stream: StreamType, line: impl Into<String>) {
    let _ = tx.send(NewLogLine::now(stream, line)).await;
}

/// Renews the lease until aborted. Stops the handler when the lease is lost,
/// when the action became Canceling (a cancel whose control message never
/// arrived), or when the lease could not be renewed for so long that it may
/// run out before the handler would have wound down (self-fencing: another
/// worker may claim it once it has expired, and must never find it running).
async fn heartbeat(exec: Arc<Executor>, uuid: Uuid, token: LeaseToken) {
    let store = exec.dispatcher.store().clone();
    let s = &exec.settings;
    let fence_after = s.lease.saturating_sub(s.kill_grace + FENCE_MARGIN);
    // Start of the last renewal that succeeded: the lease runs at least
    // `lease` from there.
    let mut renewed = tokio::time::Instant::now();
    let (mut fenced, mut noticed) = (false, false);
    let mut wait = s.heartbeat;
    loop {
        tokio::time::sleep(wait).await;
        let sent = tokio::time::Instant::now();
        match store.heartbeat(uuid, token, s.lease).await {
            Ok(Some(state)) => {
                renewed = sent;
                wait = s.heartbeat;
                if state == ActionState::Canceling && !noticed && exec.stop(uuid, StopReason::Canceled) {
                    noticed = true;
                    tracing::info!(action = %uuid, "cancel noticed by the heartbeat");
                }
            }
            Ok(None) => {
                tracing::warn!(action = %uuid, "lease lost; stopping the handler");
                exec.stop(uuid, StopReason::LeaseLost);
                return;
            }
            // The database may come back before the lease runs out: keep
            // trying, more often than usual.
            Err(e) => {
                tracing::warn!(action = %uuid, error = %e, "heartbeat failed");
                wait = s.heartbeat.min(HEARTBEAT_RETRY);
                if !fenced && renewed.elapsed() >= fence_after && exec.stop(uuid, StopReason::LeaseLost) {
                    fenced = true;
                    tracing::warn!(
                        action = %uuid,
                        "lease not renewed in time; stopping the handler before it can expire"
                    );
                }
            }
        }
    }
}

fn outage_retry_delays() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(OUTAGE_RETRY_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The job messages this worker holds because the database cannot be
/// reached, reported as the `jobs_held` condition on `/readyz` while there
/// are any.
#[derive(Default)]
struct HeldJobs {
    count: Arc<Mutex<usize>>,
}

/// The name of the condition [`HeldJobs`] reports.
pub const JOBS_HELD: &str = "jobs_held";

impl HeldJobs {
    /// Counts one more held message until the guard is dropped.
    fn hold(&self, health: &Health) -> HeldGuard {
        if let Ok(mut n) = self.count.lock() {
            *n += 1;
        }
        HeldGuard {
            count: self.count.clone(),
            health: health.clone(),
            since: chrono::Utc::now(),
        }
    }
}

/// One held job message; dropping it (claimed, or handed back) uncounts it.
struct HeldGuard {
    count: Arc<Mutex<usize>>,
    health: Health,
    since: chrono::DateTime<chrono::Utc>,
}

impl HeldGuard {
    /// Reports the latest claim failure.
    fn failed(&self, error: &stevedore_core::Error) {
        let n = self.count.lock().map(|n| *n).unwrap_or(0);
        self.health.set_unready(
            JOBS_HELD,
            format!(
                "database unreachable: holding {n} job message(s) instead of handing them back (oldest since {}): {error}",
                self.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        );
    }
}

impl Drop for HeldGuard {
    fn drop(&mut self) {
        if let Ok(mut n) = self.count.lock() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.health.clear(JOBS_HELD);
            }
        }
    }
}

fn store_retry_delays() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times()
        .build()
}

/// The per-action cap on stored output ([`WorkerSettings::max_log_bytes`]):
/// stdout and stderr lines count against it, system lines (the worker's own,
/// few and short) do not. What passes the cap is dropped and counted.
#[derive(Debug)]
pub struct LogBudget {
    limit: u64,
    stored: u64,
    dropped_lines: u64,
    dropped_bytes: u64,
}

impl LogBudget {
    /// A budget of `limit` bytes of output.
    pub fn new(limit: u64) -> Self {
        LogBudget {
            limit,
            stored: 0,
            dropped_lines: 0,
            dropped_bytes: 0,
        }
    }

    /// Whether `line` is stored; the first line refused comes back with a
    /// system line that says output is being dropped from here on.
    pub fn admit(&mut self, line: &NewLogLine) -> (bool, Option<NewLogLine>) {
        if line.stream == StreamType::System {
            return (true, None);
        }
        let len = line.log.len() as u64;
        if self.dropped_lines == 0 && self.stored + len <= self.limit {
            self.stored += len;
            return (true, None);
        }
        self.dropped_lines += 1;
        self.dropped_bytes += len;
        let notice = (self.dropped_lines == 1).then(|| {
            NewLogLine::now(
                StreamType::System,
                format!(
                    "log limit of {} bytes reached: further output is not stored",
                    self.limit
                ),
            )
        });
        (false, notice)
    }

    /// The closing system line, when anything was dropped.
    pub fn summary(&self) -> Option<NewLogLine> {
        (self.dropped_lines > 0).then(|| {
            NewLogLine::now(
                StreamType::System,
                format!(
                    "{} lines ({} bytes) of output were dropped past the log limit of {} bytes",
                    self.dropped_lines, self.dropped_bytes, self.limit
                ),
            )
        })
    }
}

/// Batches log lines into the store (fenced by the lease) and publishes
/// them, within the action's [`LogBudget`].
async fn log_writer(
    dispatcher: Dispatcher,
    action: Action,
    token: LeaseToken,
    mut rx: mpsc::Receiver<NewLogLine>,
    mut budget: LogBudget,
) {
    let mut batch: Vec<NewLogLine> = Vec::with_capacity(LOG_BATCH_LINES);
    let admit = |budget: &mut LogBudget, batch: &mut Vec<NewLogLine>, line: NewLogLine| {
        let (keep, notice) = budget.admit(&line);
        if keep {
            batch.push(line);
        }
        batch.extend(notice);
    };
    loop {
        let first = match rx.recv().await {
            Some(l) => l,
            None => break,
        };
        admit(&mut budget, &mut batch, first);
        let deadline = tokio::time::sleep(LOG_FLUSH_INTERVAL);
        tokio::pin!(deadline);
        while batch.len() < LOG_BATCH_LINES {
            tokio::select! {
                l = rx.recv() => match l { Some(l) => admit(&mut budget, &mut batch, l), None => break },
                _ = &mut deadline => break,
            }
        }
        if !batch.is_empty() {
            write_batch(&dispatcher, &action, token, &mut batch).await;
        }
    }
    if let Some(summary) = budget.summary() {
        batch.push(summary);
        write_batch(&dispatcher, &action, token, &mut batch).await;
    }
}

async fn write_batch(
    dispatcher: &Dispatcher,
    action: &Action,
    token: LeaseToken,
    batch: &mut Vec<NewLogLine>,
) {
    let mut delays = backon::ExponentialBuilder::default().with_max_times(5).build();
    loop {
        match dispatcher
            .store()
            .append_logs(action.uuid, Some(token), batch)
            .await
        {
            Ok(lines) => {
                batch.clear();
                let update = Update::Logs {
                    namespace: action.namespace.clone(),
                    lines,
                };
                if let Err(e) = dispatcher.broker().publish_update(&update).await {
                    tracing::debug!(error = %e, "log update publish failed");
                }
                return;
            }
            Err(stevedore_core::Error::Conflict(_)) => {
                tracing::warn!(action = %action.uuid, "lease lost; dropping log lines");
                batch.clear();
                return;
            }
            Err(e) => match delays.next() {
                Some(d) => {
                    tracing::warn!(action = %action.uuid, error = %e, "log write failed; retrying");
                    tokio::time::sleep(d).await;
                }
                None => {
                    tracing::error!(action = %action.uuid, error = %e, lines = batch.len(), "log lines lost after retries");
                    batch.clear();
                    return;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_budget_stores_output_up_to_its_limit_then_counts_what_it_drops() {
        let mut b = LogBudget::new(10);
        let out = |s: &str| NewLogLine::now(StreamType::Stdout, s);
        assert!(b.admit(&out("12345")).0);
        assert!(b.admit(&out("12345")).0);
        let (kept, notice) = b.admit(&out("x"));
        assert!(!kept);
        assert!(notice.unwrap().log.contains("log limit of 10 bytes"));
        // Once over, later lines stay dropped, even short ones; no second notice.
        assert_eq!(b.admit(&out("")), (false, None));
        // System lines always pass.
        assert!(b.admit(&NewLogLine::now(StreamType::System, "timed out")).0);
        let summary = b.summary().unwrap();
        assert_eq!(summary.stream, StreamType::System);
        assert!(summary.log.starts_with("2 lines (1 bytes)"), "{}", summary.log);
        assert!(LogBudget::new(10).summary().is_none());
    }
}
