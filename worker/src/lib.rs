//! Stevedore's worker: consumes jobs, runs their handlers, reports state and
//! log lines.
//!
//! - [`consumer`]: the consume loop (reconnects with backoff, bounded concurrency,
//!   graceful shutdown), the control listener (cancels) and the lease reaper.
//! - [`executor`]: one job from claim to final state, with heartbeat, timeout,
//!   retries and a batched log writer.
//! - [`handlers`]: `exec` (a command), and the built-ins `noop`, `sleep`, `fail`.
//! - [`dead_letters`]: jobs the broker gave up on end their actions as Failed.

pub mod consumer;
pub mod dead_letters;
pub mod executor;
pub mod handlers;

pub use consumer::Worker;
