//! Stevedore's worker: consumes jobs, runs their handlers, reports state and
//! log lines.
//!
//! - [`consumer`]: the consume loop (reconnects with backoff, bounded concurrency,
//!   graceful shutdown), the control listener (cancels) and the lease reaper.
//! - [`executor`]: one job from claim to final state, with heartbeat, timeout,
//!   retries and a batched log writer.
//! - [`finisher`]: group commit of the executors' final writes.
//! - [`handlers`]: `exec` (a command), and the built-ins `noop`, `sleep`, `fail`.
//! - [`registry`]: the worker's entry in the workers registry (heartbeat with
//!   its running actions).
//! - [`dead_letters`]: jobs the broker gave up on end their actions as Failed.
//! - [`progress`]: handlers' progress reports, coalesced into one write per
//!   `[worker] progress_interval` and published.
//! - [`webhooks`]: the webhook relay (events → delivery rows) and sender.

pub mod consumer;
pub mod dead_letters;
pub mod executor;
pub mod finisher;
pub mod handlers;
pub mod progress;
pub mod registry;
pub mod webhooks;

pub use consumer::Worker;

/// Histogram of action run times, from claim to final state, by operation
/// name and final state.
pub const ACTION_DURATION_SECONDS: &str = "stevedore_action_duration_seconds";
/// Counter of automatic retries (temporary failures retried), by operation name.
pub const RETRIES_TOTAL: &str = "stevedore_action_retries_total";
/// Counter of expired leases the reaper handled, by outcome (`requeued`:
/// handed to another worker; `failed`: the action hit its claim limit).
pub const LEASE_EXPIRIES_TOTAL: &str = "stevedore_lease_expiries_total";
/// Histogram: final writes per [`finisher`] batch.
pub const FINISH_BATCH_SIZE: &str = "stevedore_finish_batch_size";
/// Histogram: a [`finisher`] batch's transaction, begin to commit.
pub const FINISH_COMMIT_SECONDS: &str = "stevedore_finish_commit_seconds";

fn observe_duration(action: &stevedore_core::action::Action, took: std::time::Duration) {
    metrics::histogram!(
        ACTION_DURATION_SECONDS,
        "action" => action.action.clone(),
        "state" => action.state.as_str()
    )
    .record(took.as_secs_f64());
}

fn count_lease_expiries(requeued: usize, failed: usize) {
    if requeued > 0 {
        metrics::counter!(LEASE_EXPIRIES_TOTAL, "outcome" => "requeued").increment(requeued as u64);
    }
    if failed > 0 {
        metrics::counter!(LEASE_EXPIRIES_TOTAL, "outcome" => "failed").increment(failed as u64);
    }
}
