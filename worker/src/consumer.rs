//! The worker role: consume jobs with bounded concurrency, listen for cancels,
//! reap expired leases, and shut down gracefully.

use crate::executor::Executor;
use crate::registry::Registration;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use stevedore_core::config::{Operations, WorkerSettings, HAND_BACK_WINDOW};
use stevedore_core::dispatch::Dispatcher;
use stevedore_core::messages::Control;
use stevedore_core::reconnect::Reconnect;
use stevedore_core::shutdown::Shutdown;
use stevedore_core::workers::NewWorker;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// How long running actions may take to finish after SIGTERM before they are
/// stopped and handed back to other workers, unless `[worker]
/// shutdown_deadline` says otherwise. With the default kill grace (10 s) and
/// the hand-back window (5 s) it fits the default `stop_timeout` of 40 s.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);
/// Expired leases handled per reaper pass.
const REAP_BATCH: i64 = 200;

/// A worker process's main loop.
pub struct Worker {
    dispatcher: Dispatcher,
    ops: Arc<Operations>,
    settings: WorkerSettings,
    owner: String,
    started_at: chrono::DateTime<chrono::Utc>,
    host: String,
    shutdown_deadline: Duration,
}

/// The delays between attempts to consume or subscribe again after the
/// broker failed: 200 ms doubling (with jitter) to 10 s.
pub(crate) fn reconnect() -> Reconnect {
    Reconnect::new(Duration::from_millis(200), Duration::from_secs(10))
}

impl Worker {
    /// A worker; `owner` names it in leases and in the workers registry
    /// (`host:pid:random`).
    pub fn new(dispatcher: Dispatcher, ops: Arc<Operations>, settings: WorkerSettings) -> Self {
        let host = crate::registry::host_name();
        let owner = format!(
            "{host}:{}:{}",
            std::process::id(),
            &uuid::Uuid::new_v4().to_string()[..8]
        );
        Worker {
            dispatcher,
            ops,
            owner,
            started_at: chrono::Utc::now(),
            host,
            shutdown_deadline: settings.shutdown_deadline,
            settings,
        }
    }

    /// Overrides the shutdown deadline.
    pub fn with_shutdown_deadline(mut self, d: Duration) -> Self {
        self.shutdown_deadline = d;
        self
    }

    /// Runs until `shutdown` fires, then drains.
    pub async fn run(self, shutdown: Shutdown) {
        let exec = Arc::new(Executor::new(
            self.dispatcher.clone(),
            self.ops.clone(),
            self.settings.clone(),
            self.owner.clone(),
        ));
        tracing::info!(owner = %self.owner, concurrency = self.settings.concurrency, "worker started");
        let registration = Arc::new(Registration::new(
            self.dispatcher.store().clone(),
            NewWorker {
                id: self.owner.clone(),
                host: self.host.clone(),
                pid: i64::from(std::process::id()),
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_at: self.started_at,
                concurrency: self.settings.concurrency as i64,
            },
            &self.settings,
        ));
        // Stopped after the drain, so the entry lists the actions still
        // finishing until the worker leaves.
        let registry_stop = CancellationToken::new();
        let registry = tokio::spawn({
            let registration = registration.clone();
            registration.run(exec.clone(), registry_stop.clone())
        });
        let control = tokio::spawn(control_loop(
            self.dispatcher.clone(),
            exec.clone(),
            shutdown.clone(),
        ));
        let reaper = tokio::spawn(reaper_loop(
            self.dispatcher.clone(),
            self.settings.clone(),
            shutdown.clone(),
        ));
        let dead_letters = tokio::spawn(crate::dead_letters::run(
            self.dispatcher.clone(),
            shutdown.clone(),
        ));
        let permits = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let prefetch = job_prefetch(self.settings.concurrency);
        let mut reconnect = reconnect();
        let consume = || self.dispatcher.broker().consume_jobs(prefetch);
        'outer: while let Some(mut jobs) = reconnect
            .until_connected("consume jobs", &shutdown, consume)
            .await
        {
            loop {
                let permit = tokio::select! {
                    _ = shutdown.cancelled() => break 'outer,
                    p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break 'outer },
                };
                let next = tokio::select! {
                    _ = shutdown.cancelled() => break 'outer,
                    n = jobs.next() => n,
                };
                match next {
                    Some(Ok(delivery)) => {
                        // One permit per action of the message, as many as
                        // are free (soon); the executor hands the rest on.
                        let held = take_slots(&permits, permit, delivery.job.actions.len()).await;
                        let exec = exec.clone();
                        tokio::spawn(async move { exec.handle(delivery, held).await });
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "job stream failed; reconnecting");
                        break;
                    }
                    None => {
                        tracing::warn!("job stream ended; reconnecting");
                        break;
                    }
                }
            }
        }
        // Graceful shutdown: no new jobs (the stream is dropped, so unacked
        // prefetched jobs return to the queue); running ones get a deadline.
        tracing::info!(running = exec.running_count(), "worker draining");
        exec.release_held();
        let total = self.settings.concurrency.max(1) as u32;
        if tokio::time::timeout(self.shutdown_deadline, permits.acquire_many(total))
            .await
            .is_err()
        {
            tracing::warn!(
                running = exec.running_count(),
                "shutdown deadline passed; stopping running actions and handing them back"
            );
            exec.stop_all();
            // Commands get their SIGTERM → SIGKILL grace, then a moment for
            // the hand-back writes.
            let wind_down = self.settings.kill_grace + HAND_BACK_WINDOW;
            let _ = tokio::time::timeout(wind_down, permits.acquire_many(total)).await;
        }
        control.abort();
        reaper.abort();
        dead_letters.abort();
        registry_stop.cancel();
        let _ = registry.await;
        registration.deregister().await;
        tracing::info!("worker stopped");
    }
}

/// Job messages a worker has delivered ahead of taking them. A message stays
/// unacknowledged while its actions are claimed (one commit), so under light
/// load, when each message carries one action, this bounds the claims in
/// flight: a quarter of the slots. Under heavy load messages are larger; a
/// worker takes as many of a message's actions as it has slots for and
/// hands the rest back to the queue (see [`Executor::handle`]), so no worker
/// sits on more than it can start. Never more than the slots, at least one
/// full message's worth plus one.
fn job_prefetch(concurrency: usize) -> u16 {
    let full = concurrency.div_ceil(stevedore_core::messages::MAX_JOB_BATCH) + 1;
    (concurrency / 4)
        .max(full)
        .min(concurrency)
        .clamp(1, u16::MAX as usize) as u16
}

/// How long a worker waits for more free slots when a message carries more
/// actions than it has free, before it hands the rest on: long enough for
/// short actions to free their slots, so a saturated worker does not send
/// most of every message round the queue again.
const SLOT_WAIT: Duration = Duration::from_millis(20);

/// One permit for each of `wanted` actions, starting from `first`: those free
/// now, then any freed within [`SLOT_WAIT`].
async fn take_slots(
    permits: &Arc<Semaphore>,
    first: OwnedSemaphorePermit,
    wanted: usize,
) -> Vec<OwnedSemaphorePermit> {
    let mut held = vec![first];
    // A free permit is taken at once, without waiting for the deadline.
    let deadline = tokio::time::Instant::now() + SLOT_WAIT;
    while held.len() < wanted {
        match tokio::time::timeout_at(deadline, permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => held.push(p),
            _ => break,
        }
    }
    held
}

/// Cancels running actions when a cancel arrives on the control exchange.
async fn control_loop(dispatcher: Dispatcher, exec: Arc<Executor>, shutdown: Shutdown) {
    let mut reconnect = reconnect();
    let subscribe = || dispatcher.broker().subscribe_control();
    while let Some(mut msgs) = reconnect
        .until_connected("subscribe to control messages", &shutdown, subscribe)
        .await
    {
        while let Some(msg) = msgs.next().await {
            match msg {
                Ok(Control::Cancel { action }) => {
                    if exec.cancel(action) {
                        tracing::info!(%action, "cancel requested");
                    }
                }
                // For API and stream processes: a worker caches no credentials.
                Ok(Control::Revoke { .. }) => {}
                Err(e) => tracing::warn!(error = %e, "control message error"),
            }
        }
    }
}

/// Hands back (or fails) actions whose worker stopped heartbeating.
async fn reaper_loop(dispatcher: Dispatcher, settings: WorkerSettings, shutdown: Shutdown) {
    let period = (settings.lease / 2).max(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        match dispatcher
            .store()
            .reap_expired_leases(settings.max_claims, REAP_BATCH)
            .await
        {
            Ok(reaped) => {
                crate::count_lease_expiries(reaped.requeued.len(), reaped.failed.len());
                for s in &reaped.requeued {
                    tracing::warn!(action = %s.action.uuid, "lease expired; re-queued");
                    dispatcher.publish(&[s]).await;
                }
                for t in &reaped.failed {
                    tracing::warn!(action = %t.action.uuid, "lease expired too often; failed");
                    dispatcher.publish(&[t]).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reaper pass failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefetch_is_a_quarter_of_the_slots_within_bounds() {
        use super::job_prefetch;
        assert_eq!(job_prefetch(0), 1);
        assert_eq!(job_prefetch(1), 1);
        assert_eq!(job_prefetch(4), 2);
        assert_eq!(job_prefetch(64), 16);
        assert_eq!(job_prefetch(256), 64);
        assert_eq!(job_prefetch(1_000_000), u16::MAX);
    }
}
