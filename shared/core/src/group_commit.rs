//! Group commit in lanes: the one batching loop of the submission batcher
//! ([`crate::dispatch::SubmitBatcher`]) and the workers' final writes.
//!
//! Requests queue while a batch commits; the next batch takes everything
//! queued (up to a maximum) into one transaction. Under light load a batch
//! is one request and adds no delay; under heavy load one commit serves
//! hundreds.
//!
//! A [`GroupCommit`] has one queue and up to `lanes` batches in flight.
//! A second (third, …) batch starts while another is still committing only
//! when at least [`Lanes::parallel_from`] requests are waiting: under
//! moderate load one batch at a time makes the largest batches (the fewest
//! commits, job messages and confirms per request), and only a backlog
//! deeper than a good batch is worth a second database backend. Batches in
//! flight together are no different from the batchers of several API or
//! worker processes, which the stores already serialize where they must
//! (object locks, the events lock), so requests that are in flight at the
//! same time may commit in either order.
//!
//! **Pacing.** Without it a lane is self-clocked: the next batch starts as
//! soon as the last one ends, so under everyday load (say 1,000 actions/s)
//! a lane commits back to back, and the machine pays a batch's fixed cost
//! (round trips, a commit, a job message and its confirm) every few
//! actions. With [`Lanes::interval`] set, once a batch holds
//! [`PACE_FROM`] requests (requests are colliding), the next batch starts
//! no sooner than that interval after the previous one started, so the
//! same load makes fewer, larger batches; a backlog of
//! [`Lanes::parallel_from`] requests is never held back, and under light
//! load (smaller batches) nothing waits (docs/benchmarks-history.md,
//! round 11).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Requests the queue holds, per request of the largest batch.
const QUEUE_PER_BATCH: usize = 4;

/// How many batches may be in flight, and when more than one is worth it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lanes {
    /// Most batches in flight at once (at least one).
    pub max: usize,
    /// Requests that must be waiting before a batch starts while another
    /// is still in flight.
    pub parallel_from: usize,
    /// The least time between the starts of two batches while the previous
    /// batch held at least [`PACE_FROM`] requests (zero: no pacing).
    pub interval: Duration,
}

impl Lanes {
    /// One batch at a time.
    pub const ONE: Lanes = Lanes {
        max: 1,
        parallel_from: usize::MAX,
        interval: Duration::ZERO,
    };

    /// Up to `max` batches in flight, a further one only for a backlog of
    /// [`PARALLEL_FROM`] requests.
    pub fn up_to(max: usize) -> Lanes {
        Lanes {
            max: max.max(1),
            parallel_from: PARALLEL_FROM,
            interval: Duration::ZERO,
        }
    }

    /// These lanes, paced at `interval` (see the module's docs).
    pub fn paced(self, interval: Duration) -> Lanes {
        Lanes { interval, ..self }
    }
}

/// The size of batch from which the next one is paced: several requests in
/// one batch mean requests are colliding, so the load is worth batching.
/// Below it nothing waits, so light load keeps its latency: a lower
/// threshold would let a few requests per interval keep themselves paced
/// (two per 20 ms is 100 /s).
pub const PACE_FROM: usize = 4;

/// The backlog that starts a batch beside one in flight: about the batch a
/// single lane makes with 64 busy clients (docs/benchmarks-history.md, round 6).
pub const PARALLEL_FROM: usize = 64;

/// A handle on a group-commit loop (cheap to clone).
pub struct GroupCommit<R> {
    tx: mpsc::Sender<R>,
}

impl<R> Clone for GroupCommit<R> {
    fn clone(&self) -> Self {
        GroupCommit { tx: self.tx.clone() }
    }
}

impl<R: Send + 'static> GroupCommit<R> {
    /// Starts the batching task. It takes the queued requests, up to
    /// `max_batch` at a time, and runs `commit(batch)` on a task of its own,
    /// at most `lanes.max` at once. The task ends when every handle is
    /// dropped and every batch has been handed to `commit`.
    pub fn spawn<F, Fut>(lanes: Lanes, max_batch: usize, commit: F) -> Self
    where
        F: Fn(Vec<R>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let max_batch = max_batch.max(1);
        let (tx, rx) = mpsc::channel(max_batch * QUEUE_PER_BATCH);
        tokio::spawn(run(rx, max_batch, lanes, commit));
        GroupCommit { tx }
    }

    /// Queues `request`. Fails (handing the request back) only when the
    /// batching task has ended.
    pub async fn send(&self, request: R) -> Result<(), R> {
        self.tx.send(request).await.map_err(|e| e.0)
    }
}

/// Moves queued requests into `batch`, up to `max_batch`.
fn fill<R>(rx: &mut mpsc::Receiver<R>, batch: &mut Vec<R>, max_batch: usize) {
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
}

async fn run<R, F, Fut>(mut rx: mpsc::Receiver<R>, max_batch: usize, lanes: Lanes, commit: F)
where
    R: Send + 'static,
    F: Fn(Vec<R>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let max = lanes.max.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let finished = Arc::new(Notify::new());
    let mut open = true;
    // When the previous batch started, if the next one is to be paced.
    let mut paced_from: Option<Instant> = None;
    while open {
        let Some(first) = rx.recv().await else { break };
        let mut batch = vec![first];
        fill(&mut rx, &mut batch, max_batch);
        if let Some(started) = paced_from {
            let full = lanes.parallel_from.min(max_batch);
            let at = started + lanes.interval;
            while open && batch.len() < full && Instant::now() < at {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => break,
                    r = rx.recv() => match r {
                        Some(r) => batch.push(r),
                        None => open = false,
                    },
                }
                fill(&mut rx, &mut batch, max_batch);
            }
        }
        let permit: OwnedSemaphorePermit = loop {
            // Nothing in flight: go now. Something in flight: only for a
            // backlog worth a backend of its own.
            let idle = slots.available_permits() == max;
            if idle || batch.len() >= lanes.parallel_from {
                if let Ok(p) = slots.clone().try_acquire_owned() {
                    break p;
                }
            }
            // Wait for a batch to finish, or for more to queue.
            tokio::select! {
                _ = finished.notified() => {}
                r = rx.recv(), if open && batch.len() < max_batch => match r {
                    Some(r) => batch.push(r),
                    None => open = false,
                },
            }
            fill(&mut rx, &mut batch, max_batch);
        };
        paced_from = (!lanes.interval.is_zero() && batch.len() >= PACE_FROM).then(Instant::now);
        let work = commit(batch);
        let done = Done {
            permit: Some(permit),
            finished: finished.clone(),
        };
        tokio::spawn(async move {
            work.await;
            drop(done);
        });
    }
}

/// A batch's slot: freed, and the batching task woken, when the batch's
/// task ends, even by a panic.
struct Done {
    permit: Option<OwnedSemaphorePermit>,
    finished: Arc<Notify>,
}

impl Drop for Done {
    fn drop(&mut self) {
        // The slot first, so that the woken task finds it free.
        drop(self.permit.take());
        self.finished.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::sync::oneshot;

    /// A commit function that records each batch when it starts and holds
    /// it until the test releases it.
    #[derive(Clone, Default)]
    struct Recorder {
        started: Arc<Mutex<Vec<Vec<u32>>>>,
        gates: Arc<Mutex<Vec<oneshot::Sender<()>>>>,
    }

    impl Recorder {
        fn commit(&self) -> impl Fn(Vec<u32>) -> futures::future::BoxFuture<'static, ()> + Send + 'static {
            let me = self.clone();
            move |batch| {
                let (tx, rx) = oneshot::channel();
                me.started.lock().unwrap().push(batch);
                me.gates.lock().unwrap().push(tx);
                Box::pin(async move {
                    let _ = rx.await;
                })
            }
        }

        fn started(&self) -> Vec<Vec<u32>> {
            self.started.lock().unwrap().clone()
        }

        /// Lets every started batch finish.
        fn release(&self) {
            for g in self.gates.lock().unwrap().drain(..) {
                let _ = g.send(());
            }
        }
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    /// Queues `ns` in order, then lets the batching task run.
    async fn send_all(gc: &GroupCommit<u32>, ns: std::ops::Range<u32>) {
        for n in ns {
            gc.send(n).await.unwrap();
        }
        settle().await;
    }

    #[tokio::test]
    async fn requests_queued_during_a_commit_form_the_next_batch_in_order() {
        let rec = Recorder::default();
        let gc = GroupCommit::spawn(Lanes::up_to(2), 3, rec.commit());
        send_all(&gc, 0..1).await;
        send_all(&gc, 1..5).await;
        assert_eq!(
            rec.started(),
            vec![vec![0]],
            "a small backlog waits for the batch in flight"
        );
        rec.release();
        settle().await;
        assert_eq!(rec.started(), vec![vec![0], vec![1, 2, 3]], "batches are capped");
        rec.release();
        settle().await;
        assert_eq!(rec.started(), vec![vec![0], vec![1, 2, 3], vec![4]]);
        rec.release();
    }

    #[tokio::test]
    async fn a_deep_backlog_starts_a_batch_beside_the_one_in_flight() {
        let rec = Recorder::default();
        let lanes = Lanes {
            max: 2,
            parallel_from: 3,
            interval: Duration::ZERO,
        };
        let gc = GroupCommit::spawn(lanes, 4, rec.commit());
        send_all(&gc, 0..1).await;
        send_all(&gc, 1..4).await;
        assert_eq!(
            rec.started(),
            vec![vec![0], vec![1, 2, 3]],
            "3 waiting: a second lane"
        );
        send_all(&gc, 4..12).await;
        assert_eq!(rec.started().len(), 2, "never more than `max` in flight");
        rec.release();
        settle().await;
        assert_eq!(
            rec.started(),
            vec![vec![0], vec![1, 2, 3], vec![4, 5, 6, 7], vec![8, 9, 10, 11]],
            "both lanes free: two full batches at once"
        );
        rec.release();
    }

    #[tokio::test]
    async fn a_batch_that_panics_frees_its_slot() {
        let started: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let seen = started.clone();
        let gc = GroupCommit::spawn(Lanes::ONE, 1, move |batch: Vec<u32>| {
            seen.lock().unwrap().push(batch.clone());
            async move {
                tokio::task::yield_now().await;
                assert!(batch != [0], "the first batch fails");
            }
        });
        send_all(&gc, 0..2).await;
        assert_eq!(*started.lock().unwrap(), vec![vec![0], vec![1]]);
    }

    #[tokio::test(start_paused = true)]
    async fn colliding_requests_are_paced_and_single_ones_are_not() {
        let rec = Recorder::default();
        let lanes = Lanes {
            max: 2,
            parallel_from: 4,
            interval: Duration::from_millis(10),
        };
        let gc = GroupCommit::spawn(lanes, 8, rec.commit());
        assert_eq!(PACE_FROM, 4, "the steps below count on it");
        // Batches of one: nothing waits, however close together.
        send_all(&gc, 0..1).await;
        rec.release();
        send_all(&gc, 1..2).await;
        rec.release();
        assert_eq!(rec.started(), vec![vec![0], vec![1]]);
        // Three at once do not make the next batch wait.
        send_all(&gc, 2..5).await;
        rec.release();
        send_all(&gc, 5..6).await;
        assert_eq!(rec.started()[3], vec![5]);
        rec.release();
        // Four at once (colliding) start at once, but make the next batch
        // wait for the interval, gathering what arrives meanwhile.
        send_all(&gc, 6..10).await;
        rec.release();
        assert_eq!(rec.started().len(), 5);
        send_all(&gc, 10..11).await;
        tokio::time::sleep(Duration::from_millis(4)).await;
        send_all(&gc, 11..12).await;
        assert_eq!(
            rec.started().len(),
            5,
            "paced: held until the interval has passed"
        );
        tokio::time::sleep(Duration::from_millis(7)).await;
        settle().await;
        assert_eq!(rec.started()[5], vec![10, 11]);
        rec.release();
        // A backlog of `parallel_from` is never held back.
        send_all(&gc, 12..16).await;
        assert_eq!(rec.started()[6], vec![12, 13, 14, 15]);
        rec.release();
    }

    #[tokio::test]
    async fn one_lane_never_overlaps_batches() {
        let rec = Recorder::default();
        let gc = GroupCommit::spawn(Lanes::ONE, 2, rec.commit());
        send_all(&gc, 0..6).await;
        assert_eq!(rec.started().len(), 1);
        rec.release();
        settle().await;
        assert_eq!(rec.started().len(), 2);
        rec.release();
    }
}
