//! The dead-letter consumer: a job the broker gave up on (delivered
//! [`JOB_DELIVERY_LIMIT`](stevedore_shared::broker::JOB_DELIVERY_LIMIT) times
//! without being settled, or rejected) ends its action as Failed, with the
//! reason in its log, instead of leaving it In progress for the relay to
//! publish again — so a poison job cannot loop forever.
//!
//! The action is first claimed like any job, so a dead letter never fails an
//! action a live worker holds (a duplicate of its job went bad, not the
//! action); the Failed write is then fenced by that lease and guarded by the
//! state machine, so a final action is left alone.

use backon::BackoffBuilder;
use futures::StreamExt;
use std::time::Duration;
use stevedore_shared::broker::DeadLetter;
use stevedore_shared::config::WorkerSettings;
use stevedore_shared::dispatch::Dispatcher;
use stevedore_shared::logline::{NewLogLine, StreamType};
use stevedore_shared::shutdown::Shutdown;
use stevedore_shared::state::ActionState;
use stevedore_shared::store::Scope;

/// Dead letters handled at once.
const PREFETCH: u16 = 8;
/// Pause before a dead letter goes back to its queue when the database is
/// unreachable (the dead-letter queue has no delivery limit: this pause is
/// what keeps an outage from becoming a hot loop).
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// What became of a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// The action was set Failed.
    Failed,
    /// Nothing to do: missing, final, Pending, or held by a live worker.
    LeftAlone(Option<ActionState>),
}

/// Consumes the dead-letter queue until shutdown, reconnecting with backoff.
pub async fn run(dispatcher: Dispatcher, owner: String, settings: WorkerSettings, shutdown: Shutdown) {
    let mut delays = delays();
    while !shutdown.is_triggered() {
        let mut stream = match dispatcher.broker().consume_dead_letters(PREFETCH).await {
            Ok(s) => {
                delays = self::delays();
                s
            }
            Err(e) => {
                let d = delays.next().unwrap_or(Duration::from_secs(10));
                tracing::warn!(error = %e, retry_in = ?d, "cannot consume dead letters");
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(d) => continue }
            }
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = stream.next() => n,
            };
            match next {
                Some(Ok(dead)) => settle(&dispatcher, &owner, &settings, dead).await,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "dead-letter stream failed; reconnecting");
                    break;
                }
                None => break,
            }
        }
    }
}

fn delays() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Handles one dead letter and settles it: acked once each of its actions is
/// dealt with, requeued (after a pause) when the database cannot be reached
/// (the actions already failed are final then, and left alone next time).
async fn settle(dispatcher: &Dispatcher, owner: &str, settings: &WorkerSettings, dead: DeadLetter) {
    for &uuid in &dead.job.actions {
        match fail_dead_lettered(dispatcher, owner, settings, uuid, &dead.reason).await {
            Ok(Settled::Failed) => {
                tracing::warn!(action = %uuid, reason = %dead.reason, "job dead-lettered; action Failed")
            }
            Ok(Settled::LeftAlone(state)) => {
                tracing::info!(action = %uuid, reason = %dead.reason, ?state, "job dead-lettered; action left alone")
            }
            Err(e) => {
                tracing::warn!(action = %uuid, error = %e, "cannot settle a dead letter; retrying later");
                tokio::time::sleep(RETRY_PAUSE).await;
                let _ = dead.acker.requeue().await;
                return;
            }
        }
    }
    if let Err(e) = dead.acker.ack().await {
        tracing::debug!(error = %e, "dead letter ack failed");
    }
}

/// Ends a dead-lettered job's action as Failed with `reason` in its log,
/// unless it is missing, already final, Pending, or leased by a live worker.
pub async fn fail_dead_lettered(
    dispatcher: &Dispatcher,
    owner: &str,
    settings: &WorkerSettings,
    uuid: uuid::Uuid,
    reason: &str,
) -> stevedore_shared::Result<Settled> {
    let store = dispatcher.store();
    let Some(claim) = store.claim_action(uuid, owner, settings.lease).await? else {
        let state = store.get_action(Scope::All, uuid).await?.map(|a| a.state);
        return Ok(Settled::LeftAlone(state));
    };
    let line = NewLogLine::now(
        StreamType::System,
        format!("the job could not be delivered to a worker ({reason}); giving up"),
    );
    let lines = store.append_logs(uuid, Some(claim.token), &[line]).await?;
    let update = stevedore_shared::messages::Update::Logs {
        namespace: claim.action.namespace.clone(),
        lines,
    };
    let _ = dispatcher.broker().publish_update(&update).await;
    match store
        .transition(Scope::All, uuid, ActionState::Failed, Some(claim.token))
        .await
    {
        Ok(t) => {
            dispatcher.after_transition(&t).await;
            Ok(Settled::Failed)
        }
        // A cancel finished it meanwhile: leave it.
        Err(stevedore_shared::Error::Transition(e)) => Ok(Settled::LeftAlone(Some(e.from))),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use stevedore_shared::action::NewAction;
    use stevedore_shared::broker::memory::MemoryBroker;
    use stevedore_shared::broker::{Broker, DynBroker};
    use stevedore_shared::messages::JobMessage;
    use stevedore_shared::store::{self, DynStore};
    use uuid::Uuid;

    async fn setup() -> (Dispatcher, Arc<MemoryBroker>) {
        let store: DynStore = store::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let broker = Arc::new(MemoryBroker::new());
        let dyn_broker: DynBroker = broker.clone();
        (Dispatcher::new(store, dyn_broker), broker)
    }

    fn new_action(object: Uuid) -> NewAction {
        NewAction {
            user: "alice".into(),
            ..stevedore_shared::testing::new_action(object, "start")
        }
    }

    /// Publishes the action's job, then rejects it, as a worker would with a
    /// poison message: it lands in the dead-letter list.
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
    async fn a_dead_lettered_job_fails_its_action_with_the_reason_and_promotes_the_next() {
        let (d, broker) = setup().await;
        let object = Uuid::new_v4();
        let first = d.store().submit_action(new_action(object)).await.unwrap();
        let waiting = d.store().submit_action(new_action(object)).await.unwrap();
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
            done.action.uuid,
            held.action.uuid,
            Uuid::new_v4(),
        ] {
            dead_letter(&broker, a).await;
        }
        assert_eq!(broker.dead_letter_depth(), 4);

        let shutdown = Shutdown::new();
        let task = tokio::spawn(run(
            d.clone(),
            "dead-letters".into(),
            WorkerSettings::default(),
            shutdown.clone(),
        ));
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

        assert_eq!(state(&d, first.action.uuid).await, ActionState::Failed);
        let log = d.store().logs(first.action.uuid, None).await.unwrap();
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(log[0].log.contains("rejected"), "{}", log[0].log);
        assert_eq!(log[0].stream, StreamType::System);
        // The object's next action was promoted and dispatched.
        assert_eq!(state(&d, waiting.action.uuid).await, ActionState::InProgress);
        assert_eq!(broker.jobs_depth(), 1);
        assert_eq!(state(&d, done.action.uuid).await, ActionState::Success);
        assert_eq!(state(&d, held.action.uuid).await, ActionState::InProgress);
        assert!(d.store().logs(held.action.uuid, None).await.unwrap().is_empty());
    }
}
