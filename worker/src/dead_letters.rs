//! The dead-letter consumer: a job the broker gave up on (delivered
//! [`JOB_DELIVERY_LIMIT`](stevedore_core::broker::JOB_DELIVERY_LIMIT) times
//! without being settled, or rejected) is **published again** for each of its
//! actions that still waits for a worker, with a system line in the action's
//! log saying so. It never fails an action.
//!
//! Why not fail: a job is settled as soon as its actions are claimed, so a
//! message reaches the delivery limit only when it was handed back over and
//! over *before* any claim — a database outage, workers killed between
//! delivery and claim — which says nothing about the action, and the action
//! never ran. A poison action (one whose run kills its worker) is bounded
//! elsewhere: each run is a claim, and the lease reaper fails an action after
//! `[worker] max_claims` of them.
//!
//! Actions that do not wait for a worker are left alone: missing, final,
//! Pending (its promotion publishes it), or leased (a live worker holds it,
//! or the reaper hands it back once the lease expires).

use futures::StreamExt;
use std::time::Duration;
use stevedore_core::broker::DeadLetter;
use stevedore_core::dispatch::Dispatcher;
use stevedore_core::logline::{NewLogLine, StreamType};
use stevedore_core::messages::JobMessage;
use stevedore_core::shutdown::Shutdown;
use stevedore_core::store::Scope;

/// Dead letters handled at once.
const PREFETCH: u16 = 8;
/// Pause before a dead letter goes back to its queue when the database is
/// unreachable (the dead-letter queue has no delivery limit: this pause is
/// what keeps an outage from becoming a hot loop).
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// What became of a dead letter's actions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Published again (they waited for a worker).
    pub republished: Vec<uuid::Uuid>,
    /// Left alone: missing, final, Pending, or leased.
    pub left_alone: usize,
}

/// Consumes the dead-letter queue until shutdown, reconnecting with backoff.
pub async fn run(dispatcher: Dispatcher, shutdown: Shutdown) {
    let mut reconnect = crate::consumer::reconnect();
    let consume = || dispatcher.broker().consume_dead_letters(PREFETCH);
    while let Some(mut stream) = reconnect
        .until_connected("consume dead letters", &shutdown, consume)
        .await
    {
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = stream.next() => n,
            };
            match next {
                Some(Ok(dead)) => settle(&dispatcher, dead).await,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "dead-letter stream failed; reconnecting");
                    break;
                }
                None => break,
            }
        }
    }
}

/// Handles one dead letter and settles it: acked once its waiting actions
/// are published again, requeued into the dead-letter queue (after a pause)
/// when the database or the broker cannot be reached.
async fn settle(dispatcher: &Dispatcher, dead: DeadLetter) {
    match republish_dead_lettered(dispatcher, &dead.job.actions, &dead.reason).await {
        Ok(settled) => {
            for uuid in &settled.republished {
                tracing::warn!(action = %uuid, reason = %dead.reason, "job dead-lettered; published again");
            }
            if settled.left_alone > 0 {
                tracing::info!(actions = settled.left_alone, reason = %dead.reason, "job dead-lettered; actions not waiting for a worker left alone");
            }
            if let Err(e) = dead.acker.ack().await {
                tracing::debug!(error = %e, "dead letter ack failed");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot settle a dead letter; retrying later");
            tokio::time::sleep(RETRY_PAUSE).await;
            let _ = dead.acker.requeue().await;
        }
    }
}

/// Publishes a dead-lettered job again for those of `actions` that wait for
/// a worker ([`Store::redispatch_actions`]), each with `reason` in its log.
///
/// [`Store::redispatch_actions`]: stevedore_core::store::Store::redispatch_actions
pub async fn republish_dead_lettered(
    dispatcher: &Dispatcher,
    actions: &[uuid::Uuid],
    reason: &str,
) -> stevedore_core::Result<Settled> {
    let store = dispatcher.store();
    let waiting = store.redispatch_actions(actions).await?;
    for &uuid in &waiting {
        let line = NewLogLine::now(
            StreamType::System,
            format!(
                "the job message was dead-lettered ({reason}) before any worker claimed it; published again"
            ),
        );
        let lines = store.append_logs(uuid, None, &[line]).await?;
        // Dead letters are rare: one lookup each for the stream's namespace.
        if let Some(action) = store.get_action(Scope::All, uuid).await? {
            let update = stevedore_core::messages::Update::Logs {
                namespace: action.namespace,
                lines,
            };
            let _ = dispatcher.broker().publish_update(&update).await;
        }
    }
    dispatcher
        .broker()
        .publish_jobs(&JobMessage::batches(&waiting))
        .await?;
    Ok(Settled {
        left_alone: actions.len() - waiting.len(),
        republished: waiting,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;
    use stevedore_broker::memory::MemoryBroker;
    use stevedore_core::action::NewAction;
    use stevedore_core::broker::{Broker, DynBroker};
    use stevedore_core::state::ActionState;
    use stevedore_core::store::DynStore;
    use uuid::Uuid;

    async fn setup() -> (Dispatcher, Arc<MemoryBroker>) {
        let store: DynStore = stevedore_store::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let broker = Arc::new(MemoryBroker::new());
        let dyn_broker: DynBroker = broker.clone();
        (Dispatcher::new(store, dyn_broker), broker)
    }

    fn new_action(object: Uuid) -> NewAction {
        NewAction {
            user: "alice".into(),
            ..stevedore_core::testing::new_action(object, "start")
        }
    }

    /// Publishes the action's job, then rejects it: it lands in the
    /// dead-letter list, as one over the delivery limit would.
    async fn dead_letter(broker: &MemoryBroker, action: Uuid) {
        broker.publish_jobs(&[JobMessage::one(action)]).await.unwrap();
        let mut jobs = broker.consume_jobs(1).await.unwrap();
        let d = jobs.next().await.unwrap().unwrap();
        d.acker.reject().await.unwrap();
    }

    async fn state(d: &Dispatcher, uuid: Uuid) -> ActionState {
        d.store()
            .get_action(Scope::All, uuid)
            .await
            .unwrap()
            .unwrap()
            .state
    }

    #[tokio::test]
    async fn a_dead_lettered_job_is_published_again_for_actions_that_wait_and_fails_none() {
        let (d, broker) = setup().await;
        let object = Uuid::new_v4();
        let first = d.store().submit_action(new_action(object)).await.unwrap();
        let pending = d.store().submit_action(new_action(object)).await.unwrap();
        // Final actions and a leased one are not touched.
        let done = d.store().submit_action(new_action(Uuid::new_v4())).await.unwrap();
        let c = d
            .store()
            .claim_action(done.action.uuid, "w", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        d.store()
            .transition(Scope::All, done.action.uuid, ActionState::Success, Some(c.token))
            .await
            .unwrap();
        let held = d.store().submit_action(new_action(Uuid::new_v4())).await.unwrap();
        d.store()
            .claim_action(held.action.uuid, "w", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        for a in [
            first.action.uuid,
            pending.action.uuid,
            done.action.uuid,
            held.action.uuid,
            Uuid::new_v4(),
        ] {
            dead_letter(&broker, a).await;
        }
        assert_eq!(broker.dead_letter_depth(), 5);
        assert_eq!(broker.jobs_depth(), 0);

        let shutdown = Shutdown::new();
        let task = tokio::spawn(run(d.clone(), shutdown.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while broker.dead_letter_depth() > 0 || broker.unacked() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "dead letters not consumed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        shutdown.trigger();
        task.await.unwrap();

        // The waiting action is published again, with a line saying why,
        // and stays In progress for a worker to run.
        assert_eq!(state(&d, first.action.uuid).await, ActionState::InProgress);
        assert_eq!(broker.jobs_depth(), 1);
        let log = d.store().logs(first.action.uuid, None).await.unwrap();
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(log[0].log.contains("rejected"), "{}", log[0].log);
        assert!(log[0].log.contains("published again"), "{}", log[0].log);
        assert_eq!(log[0].stream, StreamType::System);
        // Nothing else moved.
        assert_eq!(state(&d, pending.action.uuid).await, ActionState::Pending);
        assert_eq!(state(&d, done.action.uuid).await, ActionState::Success);
        assert_eq!(state(&d, held.action.uuid).await, ActionState::InProgress);
        assert!(d.store().logs(held.action.uuid, None).await.unwrap().is_empty());
    }
}
