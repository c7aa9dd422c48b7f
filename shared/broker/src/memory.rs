//! The in-process backend of [`Broker`], for `stevedore dev` and tests.
//!
//! It keeps RabbitMQ's semantics where Stevedore relies on them:
//! - the jobs queue has competing consumers, each holding at most `prefetch`
//!   unsettled deliveries;
//! - a requeued delivery goes back to the head of the queue and comes again
//!   with `redelivered` set; a delivery dropped without being settled is
//!   requeued the same way (RabbitMQ does so when the consumer's connection
//!   closes);
//! - a rejected job, or one delivered more than [`JOB_DELIVERY_LIMIT`] times,
//!   goes to the dead-letter list;
//! - updates and control messages fan out to every current subscriber through
//!   bounded broadcast channels: a subscriber that falls behind gets an `Err`
//!   item saying how many messages it missed, then continues.
//!
//! Nothing is persisted: everything is gone when the last clone is dropped.

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use stevedore_core::broker::{
    Acker, Broker, ControlStream, DeadLetter, DeadLetterStream, JobDelivery, JobStream, UpdateStream,
    JOB_DELIVERY_LIMIT,
};
use stevedore_core::messages::{Control, JobMessage, Update};
use stevedore_core::{Error, Result};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// How many updates or control messages a subscriber may fall behind by
/// default before it misses some.
pub const DEFAULT_BROADCAST_CAPACITY: usize = 4096;

/// An in-process [`Broker`]. Clones share the same queues and exchanges.
#[derive(Clone)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queue = self.inner.queue();
        f.debug_struct("MemoryBroker")
            .field("ready", &queue.ready.len())
            .field("unacked", &queue.unacked)
            .field("dead", &queue.dead.len())
            .finish()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        MemoryBroker::new()
    }
}

impl MemoryBroker {
    /// An empty broker with [`DEFAULT_BROADCAST_CAPACITY`].
    pub fn new() -> Self {
        MemoryBroker::with_broadcast_capacity(DEFAULT_BROADCAST_CAPACITY)
    }

    /// An empty broker whose update and control subscribers may each fall
    /// behind by `capacity` messages (at least 1) before missing some.
    pub fn with_broadcast_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (updates, _) = broadcast::channel(capacity);
        let (control, _) = broadcast::channel(capacity);
        MemoryBroker {
            inner: Arc::new(Inner {
                queue: Mutex::new(JobsQueue::default()),
                job_ready: Notify::new(),
                dead_ready: Notify::new(),
                updates,
                control,
            }),
        }
    }

    /// The jobs that were dead-lettered, oldest first.
    pub fn dead_letters(&self) -> Vec<JobMessage> {
        self.inner.queue().dead.iter().map(|d| d.job.clone()).collect()
    }

    /// How many jobs were dead-lettered.
    pub fn dead_letter_depth(&self) -> usize {
        self.inner.queue().dead.len()
    }

    /// How many jobs wait for delivery (unsettled deliveries not counted).
    pub fn jobs_depth(&self) -> usize {
        self.inner.queue().ready.len()
    }

    /// How many deliveries are out and not yet settled.
    pub fn unacked(&self) -> usize {
        self.inner.queue().unacked
    }
}

struct Inner {
    queue: Mutex<JobsQueue>,
    /// Signalled (to every waiting consumer) whenever a job becomes ready.
    job_ready: Notify,
    /// Signalled whenever a dead letter becomes ready.
    dead_ready: Notify,
    updates: broadcast::Sender<Update>,
    control: broadcast::Sender<Control>,
}

#[derive(Default)]
struct JobsQueue {
    ready: VecDeque<Queued>,
    dead: VecDeque<Dead>,
    unacked: usize,
}

/// A dead-lettered job and why (spelled as RabbitMQ spells it).
#[derive(Clone)]
struct Dead {
    job: JobMessage,
    reason: String,
}

/// A job in the queue, with how many times it has been delivered.
struct Queued {
    job: JobMessage,
    deliveries: u32,
}

/// How a delivery is settled.
#[derive(Clone, Copy)]
enum Settle {
    Ack,
    Requeue,
    Reject,
}

impl Inner {
    fn queue(&self) -> MutexGuard<'_, JobsQueue> {
        // The lock is never held across code that can panic halfway through
        // an update, so a poisoned lock still guards consistent data.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a ready job and takes it (counting the delivery).
    /// Cancel-safe: nothing is taken unless the future completes.
    async fn next_job(&self) -> Queued {
        loop {
            let notified = self.job_ready.notified();
            tokio::pin!(notified);
            // Register before looking, so a job pushed in between wakes us.
            notified.as_mut().enable();
            {
                let mut queue = self.queue();
                if let Some(mut queued) = queue.ready.pop_front() {
                    queued.deliveries = queued.deliveries.saturating_add(1);
                    queue.unacked += 1;
                    return queued;
                }
            }
            notified.await;
        }
    }

    /// Waits for a dead letter and takes it. Cancel-safe like [`Self::next_job`].
    async fn next_dead(&self) -> Dead {
        loop {
            let notified = self.dead_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(dead) = self.queue().dead.pop_front() {
                return dead;
            }
            notified.await;
        }
    }

    /// Puts a dead letter back at the head of the dead-letter list.
    fn return_dead(&self, dead: Dead) {
        self.queue().dead.push_front(dead);
        self.dead_ready.notify_waiters();
    }

    fn settle(&self, queued: Queued, how: Settle) {
        let mut queue = self.queue();
        queue.unacked = queue.unacked.saturating_sub(1);
        match how {
            Settle::Ack => {}
            Settle::Reject => {
                queue.dead.push_back(Dead {
                    job: queued.job,
                    reason: "rejected".to_string(),
                });
                drop(queue);
                self.dead_ready.notify_waiters();
            }
            Settle::Requeue if queued.deliveries > JOB_DELIVERY_LIMIT => {
                queue.dead.push_back(Dead {
                    job: queued.job,
                    reason: format!("delivery_limit: delivered more than {JOB_DELIVERY_LIMIT} times"),
                });
                drop(queue);
                self.dead_ready.notify_waiters();
            }
            Settle::Requeue => {
                queue.ready.push_front(queued);
                drop(queue);
                self.job_ready.notify_waiters();
            }
        }
    }
}

/// An unsettled delivery: the job and the consumer's prefetch slot it holds.
struct Outstanding {
    queued: Queued,
    _slot: OwnedSemaphorePermit,
}

/// Settles one delivery of the [`MemoryBroker`]; dropped unsettled, it
/// requeues the job.
struct MemoryAcker {
    inner: Arc<Inner>,
    outstanding: Mutex<Option<Outstanding>>,
}

impl MemoryAcker {
    fn take(&self) -> Option<Outstanding> {
        self.outstanding.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn settle(&self, how: Settle) -> Result<()> {
        let outstanding = self
            .take()
            .ok_or_else(|| Error::Broker("delivery already settled".to_string()))?;
        // The job is settled before the prefetch slot is freed.
        self.inner.settle(outstanding.queued, how);
        Ok(())
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        if let Some(outstanding) = self.take() {
            self.inner.settle(outstanding.queued, Settle::Requeue);
        }
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(&self) -> Result<()> {
        self.settle(Settle::Ack)
    }

    async fn requeue(&self) -> Result<()> {
        self.settle(Settle::Requeue)
    }

    async fn reject(&self) -> Result<()> {
        self.settle(Settle::Reject)
    }
}

/// Settles one dead letter; dropped unsettled (or requeued), it goes back to
/// the dead-letter list. Rejecting it drops it, as the list has no
/// dead-letter list of its own.
struct DeadAcker {
    inner: Arc<Inner>,
    dead: Mutex<Option<(Dead, OwnedSemaphorePermit)>>,
}

impl DeadAcker {
    fn take(&self) -> Result<Dead> {
        self.dead
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .map(|(dead, _slot)| dead)
            .ok_or_else(|| Error::Broker("delivery already settled".to_string()))
    }
}

impl Drop for DeadAcker {
    fn drop(&mut self) {
        if let Ok(dead) = self.take() {
            self.inner.return_dead(dead);
        }
    }
}

#[async_trait]
impl Acker for DeadAcker {
    async fn ack(&self) -> Result<()> {
        self.take().map(drop)
    }

    async fn requeue(&self) -> Result<()> {
        let dead = self.take()?;
        self.inner.return_dead(dead);
        Ok(())
    }

    async fn reject(&self) -> Result<()> {
        self.take().map(drop)
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn declare(&self) -> Result<()> {
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn publish_jobs(&self, jobs: &[JobMessage]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        {
            let mut queue = self.inner.queue();
            queue.ready.extend(jobs.iter().map(|job| Queued {
                job: job.clone(),
                deliveries: 0,
            }));
        }
        self.inner.job_ready.notify_waiters();
        Ok(())
    }

    async fn consume_jobs(&self, prefetch: u16) -> Result<JobStream> {
        // Like AMQP, a prefetch of 0 means no limit.
        let slots = match prefetch {
            0 => Semaphore::MAX_PERMITS,
            n => usize::from(n),
        };
        let slots = Arc::new(Semaphore::new(slots));
        let inner = self.inner.clone();
        let stream = futures::stream::unfold((inner, slots), |(inner, slots)| async move {
            let slot = slots.clone().acquire_owned().await.ok()?;
            let queued = inner.next_job().await;
            let delivery = JobDelivery {
                job: queued.job.clone(),
                redelivered: queued.deliveries > 1,
                acker: Box::new(MemoryAcker {
                    inner: inner.clone(),
                    outstanding: Mutex::new(Some(Outstanding { queued, _slot: slot })),
                }),
            };
            Some((Ok(delivery), (inner, slots)))
        });
        Ok(stream.boxed())
    }

    async fn publish_update(&self, update: &Update) -> Result<()> {
        // No subscriber is not an error: updates are best effort.
        let _ = self.inner.updates.send(update.clone());
        Ok(())
    }

    async fn subscribe_updates(&self) -> Result<UpdateStream> {
        Ok(broadcast_stream(self.inner.updates.subscribe(), "update"))
    }

    fn spans_processes(&self) -> bool {
        false
    }

    async fn publish_control(&self, msg: &Control) -> Result<()> {
        let _ = self.inner.control.send(msg.clone());
        Ok(())
    }

    async fn subscribe_control(&self) -> Result<ControlStream> {
        Ok(broadcast_stream(self.inner.control.subscribe(), "control"))
    }

    async fn jobs_depth(&self) -> Result<u64> {
        Ok(MemoryBroker::jobs_depth(self) as u64)
    }

    async fn consume_dead_letters(&self, prefetch: u16) -> Result<DeadLetterStream> {
        let slots = match prefetch {
            0 => Semaphore::MAX_PERMITS,
            n => usize::from(n),
        };
        let slots = Arc::new(Semaphore::new(slots));
        let inner = self.inner.clone();
        let stream = futures::stream::unfold((inner, slots), |(inner, slots)| async move {
            let slot = slots.clone().acquire_owned().await.ok()?;
            let dead = inner.next_dead().await;
            let item = DeadLetter {
                job: dead.job.clone(),
                reason: dead.reason.clone(),
                acker: Box::new(DeadAcker {
                    inner: inner.clone(),
                    dead: Mutex::new(Some((dead, slot))),
                }),
            };
            Some((Ok(item), (inner, slots)))
        });
        Ok(stream.boxed())
    }
}

/// A stream over a broadcast receiver; a lag becomes one `Err` item.
fn broadcast_stream<T>(rx: broadcast::Receiver<T>, what: &'static str) -> BoxStream<'static, Result<T>>
where
    T: Clone + Send + 'static,
{
    futures::stream::unfold(rx, move |mut rx| async move {
        match rx.recv().await {
            Ok(message) => Some((Ok(message), rx)),
            Err(RecvError::Lagged(missed)) => Some((
                Err(Error::Broker(format!(
                    "{what} subscriber fell behind and missed {missed} messages"
                ))),
                rx,
            )),
            Err(RecvError::Closed) => None,
        }
    })
    .boxed()
}
