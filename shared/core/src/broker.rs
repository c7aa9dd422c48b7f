//! The `Broker`: how jobs, updates and control messages travel, behind one
//! trait with two drivers in the `stevedore-broker` crate — RabbitMQ for
//! production and in-process for `stevedore dev` — that pass one
//! conformance suite (`shared/broker/tests/conformance.rs`).
//!
//! Topology (names prefixed by [`BrokerNames::prefix`], default `stevedore`):
//! - `<prefix>.jobs`: durable **quorum** queue of [`JobMessage`]s, competing
//!   consumers, manual acks, dead-lettered through `<prefix>.dlx` to
//!   `<prefix>.jobs.dead` after [`JOB_DELIVERY_LIMIT`] deliveries;
//! - `<prefix>.updates`: **topic** exchange of [`Update`]s; every subscriber
//!   gets its own exclusive, auto-deleted queue bound to `#`;
//! - `<prefix>.control`: **fanout** exchange of [`Control`] messages; every
//!   subscriber gets its own exclusive queue.
//!
//! **Invariant:** `publish_job` returns only once the broker has confirmed the
//! message (publisher confirms); a message may still be delivered twice.
//! **Invariant:** no publish waits without bound: a stalled broker fails it
//! after the publish timeout, a blocked one at once.

use crate::messages::{Control, JobMessage, Update};
use crate::Result;
use async_trait::async_trait;
use futures::stream::BoxStream;
use std::sync::Arc;

/// How many times a job may be delivered before it is dead-lettered. A job
/// whose consumer crashes on it (a poison message) cannot loop forever.
pub const JOB_DELIVERY_LIMIT: u32 = 20;

/// Exchange and queue names derived from one prefix, so test runs and
/// deployments never collide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerNames {
    /// The prefix (`stevedore` by default).
    pub prefix: String,
    /// How many quorum queues jobs are spread over (`[broker] job_queues`,
    /// at least 1). See [`BrokerNames::job_queues`].
    pub job_queue_count: u16,
}

/// The most job queues `[broker] job_queues` may ask for.
pub const MAX_JOB_QUEUES: u16 = 64;

impl BrokerNames {
    /// Names under `prefix`, with one job queue.
    pub fn new(prefix: impl Into<String>) -> Self {
        BrokerNames {
            prefix: prefix.into(),
            job_queue_count: 1,
        }
    }

    /// The same names with jobs spread over `count` quorum queues (clamped
    /// to 1..=[`MAX_JOB_QUEUES`]).
    pub fn with_job_queues(mut self, count: u16) -> Self {
        self.job_queue_count = count.clamp(1, MAX_JOB_QUEUES);
        self
    }

    /// The first (with one queue, the only) jobs quorum queue.
    pub fn jobs_queue(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    /// Every jobs quorum queue: `<prefix>.jobs`, then `<prefix>.jobs.1`,
    /// `<prefix>.jobs.2`, …. Publishers spread job messages over them and
    /// every worker consumes from all of them, so one queue's throughput
    /// (a quorum queue is one Raft group, led by one node) is no longer the
    /// ceiling. The choice of queue never decides order: an object has at
    /// most one action In progress, the store's locks see to that.
    pub fn job_queues(&self) -> Vec<String> {
        (0..self.queue_count()).map(|i| self.job_queue(i)).collect()
    }

    /// How many job queues there are: `job_queue_count`, at least 1.
    pub fn queue_count(&self) -> u16 {
        self.job_queue_count.max(1)
    }

    /// The `x-queue-leader-locator` job queue number `index` is declared
    /// with: `balanced` (the node with the fewest leaders, so that several
    /// queues spread over a cluster; RabbitMQ's default is the declaring
    /// client's node) for every queue but the first, which predates the
    /// option: RabbitMQ refuses to redeclare an existing queue with other
    /// arguments.
    pub fn job_queue_leader_locator(&self, index: u16) -> Option<&'static str> {
        (index > 0).then_some("balanced")
    }

    /// Job queue number `index` (0 is [`BrokerNames::jobs_queue`]).
    pub fn job_queue(&self, index: u16) -> String {
        match index {
            0 => self.jobs_queue(),
            i => format!("{}.jobs.{i}", self.prefix),
        }
    }
    /// The dead-letter exchange for jobs.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }
    /// The dead-letter queue for jobs.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.jobs.dead", self.prefix)
    }
    /// The updates topic exchange.
    pub fn updates_exchange(&self) -> String {
        format!("{}.updates", self.prefix)
    }
    /// The control fanout exchange.
    pub fn control_exchange(&self) -> String {
        format!("{}.control", self.prefix)
    }
}

impl Default for BrokerNames {
    fn default() -> Self {
        BrokerNames::new("stevedore")
    }
}

/// Acknowledges one delivery back to the broker.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Done with it: the broker forgets it.
    async fn ack(&self) -> Result<()>;
    /// Give it back: it will be delivered again (to any consumer).
    async fn requeue(&self) -> Result<()>;
    /// Refuse it for good: it goes to the dead-letter queue.
    async fn reject(&self) -> Result<()>;
}

/// A job delivered to a consumer. Dropping it without acking leaves it
/// unacknowledged until the consumer's connection closes, when the broker
/// delivers it again.
pub struct JobDelivery {
    /// The job.
    pub job: JobMessage,
    /// Whether the broker has delivered it before.
    pub redelivered: bool,
    /// Settles the delivery.
    pub acker: Box<dyn Acker>,
}

impl std::fmt::Debug for JobDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobDelivery")
            .field("job", &self.job)
            .field("redelivered", &self.redelivered)
            .finish()
    }
}

/// A stream of job deliveries; it ends (or yields an error) when the
/// connection is lost, and the consumer then subscribes again.
pub type JobStream = BoxStream<'static, Result<JobDelivery>>;
/// A job the broker dead-lettered: delivered [`JOB_DELIVERY_LIMIT`] times
/// without being settled, or rejected.
pub struct DeadLetter {
    /// The job.
    pub job: JobMessage,
    /// Why it was dead-lettered, as the broker says it (`delivery_limit`,
    /// `rejected`, …), with the number of deliveries when known.
    pub reason: String,
    /// Settles the dead letter: `ack` forgets it, `requeue` keeps it in the
    /// dead-letter queue for a later attempt.
    pub acker: Box<dyn Acker>,
}

impl std::fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetter")
            .field("job", &self.job)
            .field("reason", &self.reason)
            .finish()
    }
}

/// A stream of dead letters; like a [`JobStream`], it ends or fails when the
/// connection is lost.
pub type DeadLetterStream = BoxStream<'static, Result<DeadLetter>>;
/// A stream of updates.
pub type UpdateStream = BoxStream<'static, Result<Update>>;
/// A stream of control messages.
pub type ControlStream = BoxStream<'static, Result<Control>>;

/// The messaging interface.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Declares the topology (idempotent).
    async fn declare(&self) -> Result<()>;

    /// Whether other processes (the admin commands among them) can reach
    /// this process's subscribers: true for RabbitMQ, false for the
    /// in-process broker.
    fn spans_processes(&self) -> bool {
        true
    }

    /// Checks that the broker answers.
    async fn ping(&self) -> Result<()>;

    /// Publishes jobs (persistent) and returns once every one is confirmed.
    /// Confirms are pipelined: all are sent before any is awaited.
    async fn publish_jobs(&self, jobs: &[JobMessage]) -> Result<()>;

    /// Consumes the jobs queue with at most `prefetch` unacknowledged deliveries.
    async fn consume_jobs(&self, prefetch: u16) -> Result<JobStream>;

    /// Publishes an update (not persistent; best effort, not confirmed).
    async fn publish_update(&self, update: &Update) -> Result<()>;

    /// Subscribes to every update published from now on.
    async fn subscribe_updates(&self) -> Result<UpdateStream>;

    /// Publishes a control message to every subscriber.
    async fn publish_control(&self, msg: &Control) -> Result<()>;

    /// Subscribes to every control message published from now on.
    async fn subscribe_control(&self) -> Result<ControlStream>;

    /// Consumes the dead-letter queue with at most `prefetch` unsettled
    /// deliveries (competing consumers, like the jobs queue). Messages that
    /// are not jobs are dropped with a warning, so nothing loops.
    async fn consume_dead_letters(&self, prefetch: u16) -> Result<DeadLetterStream>;

    /// How many jobs wait in the jobs queue, ready for delivery (deliveries
    /// out and not yet settled are not counted). Sampled by `/metrics`, and
    /// read by the relay before it republishes unclaimed actions.
    async fn jobs_depth(&self) -> Result<u64>;

    /// Why the broker refuses publishes now, if it does (RabbitMQ's
    /// `connection.blocked` during a memory or disk alarm): publishes fail
    /// at once instead of hanging, and `/readyz` reports it.
    fn blocked(&self) -> Option<String> {
        None
    }
}

/// A shared, dynamically dispatched broker.
pub type DynBroker = Arc<dyn Broker>;
