//! Group commit of the workers' final writes.
//!
//! Each final state is one transaction that holds the store's events lock
//! through its commit, so one at a time they are bounded by the commit's
//! fsync. The [`Finisher`] ([`GroupCommit`]) queues them while a batch
//! commits and writes the next batch with one [`Store::transition_many`]
//! (one commit, one hold of the events lock). Under light load a batch is
//! one write and adds no delay.
//! Fencing is unchanged: every write in a batch is guarded by its own lease
//! token, and a refused one does not affect the others.
//!
//! [`Store::transition_many`]: stevedore_core::store::Store::transition_many

use stevedore_core::dispatch::Dispatcher;
use stevedore_core::group_commit::GroupCommit;
use stevedore_core::store::{Finish, Scope, Transitioned};
use stevedore_core::{Error, Result};
use tokio::sync::oneshot;

/// Most final writes committed together.
pub const MAX_FINISH_BATCH: usize = 256;

type FinishRequest = (Finish, oneshot::Sender<Result<Transitioned>>);

/// A handle on the process's final-write batching task.
#[derive(Clone)]
pub struct Finisher {
    batches: GroupCommit<FinishRequest>,
}

impl Finisher {
    /// Starts the batching task (it ends when every handle is dropped).
    pub fn spawn(dispatcher: Dispatcher) -> Self {
        let lanes = dispatcher.lanes();
        Finisher {
            batches: GroupCommit::spawn(lanes, MAX_FINISH_BATCH, move |batch| {
                commit_finishes(dispatcher.clone(), batch)
            }),
        }
    }

    /// Writes one final state (in some batch), as
    /// `store.transition(Scope::All, f.uuid, f.to, Some(f.token))` would, and
    /// publishes it (with the batch's other events in one update, and the
    /// jobs of the actions it promoted) before answering.
    pub async fn finish(&self, f: Finish) -> Result<Transitioned> {
        let (reply, rx) = oneshot::channel();
        self.batches
            .send((f, reply))
            .await
            .map_err(|_| Error::Internal("the finisher has stopped".into()))?;
        rx.await
            .map_err(|_| Error::Internal("the final write was dropped".into()))?
    }
}

/// Writes one batch of final states and publishes its events, then the
/// promoted actions' jobs and the answers on a task of their own, so that
/// the lane is free for the next batch.
async fn commit_finishes(dispatcher: Dispatcher, batch: Vec<FinishRequest>) {
    let store = dispatcher.store().clone();
    let (finishes, replies): (Vec<Finish>, Vec<_>) = batch.into_iter().unzip();
    metrics::histogram!(crate::FINISH_BATCH_SIZE).record(finishes.len() as f64);
    let started = std::time::Instant::now();
    let results = match store.transition_many(&finishes).await {
        Ok(all) => all,
        // The batch as a whole failed (nothing was written): each one on
        // its own, so every caller gets its own answer.
        Err(_) if finishes.len() > 1 => {
            let mut each = Vec::with_capacity(finishes.len());
            for f in &finishes {
                each.push(store.transition(Scope::All, f.uuid, f.to, Some(f.token)).await);
            }
            each
        }
        Err(e) => vec![Err(e)],
    };
    metrics::histogram!(crate::FINISH_COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
    // Events while this batch still holds its slot (commit order with one
    // lane); the promoted jobs and the answers while the next batch commits.
    let written: Vec<&Transitioned> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    dispatcher.publish_events_of(&written).await;
    tokio::spawn(async move {
        let written: Vec<&Transitioned> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let confirmed = dispatcher.publish_jobs_of(&written).await;
        dispatcher.mark_sent(&confirmed).await;
        for (r, reply) in results.into_iter().zip(replies) {
            let _ = reply.send(r);
        }
    });
}
