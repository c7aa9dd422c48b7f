//! The webhook relay: events → delivery rows.
//!
//! It reads the events after its cursor (`seq` order is commit order), and
//! for each action event whose namespace, state, object type and verb a
//! webhook matches ([`WebhookTarget::matches`]) records a delivery with
//! the action JSON in that state as its body. The rows and the cursor's
//! move commit together; two relays that read the same cursor cannot both
//! move it, so several workers may run one each.
//!
//! With no webhook at all it only moves the cursor to the last event: the
//! actions' own path never pays for webhooks.

use std::time::Duration;
use stevedore_core::event::{Event, EventKind};
use stevedore_core::state::ActionState;
use stevedore_core::store::{DynStore, Scope};
use stevedore_core::webhook::{NewDelivery, WebhookTarget};
use stevedore_core::Result;
use uuid::Uuid;

/// Events read per step.
pub const BATCH: i64 = 256;

/// See the module docs.
pub struct Relay {
    store: DynStore,
    poll: Duration,
}

impl Relay {
    /// A relay over `store`, looking for new events every `poll` when idle.
    pub fn new(store: DynStore, poll: Duration) -> Self {
        Relay { store, poll }
    }

    /// Steps until `shutdown`; an error (the database away) is logged and
    /// the step tried again after a pause.
    pub async fn run(self, shutdown: stevedore_core::shutdown::Shutdown) {
        loop {
            let more = match self.step().await {
                Ok(more) => more,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook relay step failed; retrying");
                    false
                }
            };
            if !more {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(self.poll) => {}
                }
            } else if shutdown.is_triggered() {
                return;
            }
        }
    }

    /// Matches the next batch of events; `true` when more may be waiting.
    ///
    /// The newest event's `seq` is read before the webhooks, and nothing
    /// past it is matched in this step: a webhook missing from the list
    /// read next was created after that read, so it starts after that
    /// `seq` (`after_seq`, and the store numbers events in commit order) and
    /// wants none of the events matched here. Reading the webhooks first
    /// would let one created between the two reads miss the events
    /// committed meanwhile, and the cursor move past them.
    pub async fn step(&self) -> Result<bool> {
        let cursor = self.store.webhook_cursor().await?;
        let newest = self.store.last_event_seq().await?;
        if newest <= cursor {
            return Ok(false);
        }
        let targets = self.store.webhook_targets().await?;
        if targets.is_empty() {
            self.store.advance_webhook_cursor(cursor, newest, &[]).await?;
            return Ok(false);
        }
        let read = self.store.events_after(Scope::All, cursor, BATCH).await?;
        let full = read.len() as i64 == BATCH;
        let events: Vec<Event> = read.into_iter().take_while(|e| e.seq <= newest).collect();
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(false);
        };
        let mut deliveries = vec![];
        for event in &events {
            deliveries.extend(self.deliveries_of(event, &targets).await?);
        }
        let recorded = deliveries.len();
        if self
            .store
            .advance_webhook_cursor(cursor, last, &deliveries)
            .await?
            && recorded > 0
        {
            metrics::counter!(super::WEBHOOK_DELIVERIES_TOTAL).increment(recorded as u64);
            tracing::debug!(recorded, up_to = last, "webhook deliveries recorded");
        }
        Ok(full)
    }

    /// The deliveries one event makes.
    async fn deliveries_of(&self, event: &Event, targets: &[WebhookTarget]) -> Result<Vec<NewDelivery>> {
        if event.object_type != "action" {
            return Ok(vec![]);
        }
        let Ok(state) = event.state.parse::<ActionState>() else {
            return Ok(vec![]);
        };
        if !reaches_state(event.action, state) {
            return Ok(vec![]);
        }
        // The action is read only when a webhook of its namespace wants its state.
        let wanted = targets
            .iter()
            .any(|t| t.namespace == event.namespace && t.states.contains(&state) && event.seq > t.after_seq);
        let Ok(uuid) = event.uuid.parse::<Uuid>() else {
            return Ok(vec![]);
        };
        if !wanted {
            return Ok(vec![]);
        }
        let Some(mut action) = self.store.get_action(Scope::All, uuid).await? else {
            return Ok(vec![]);
        };
        // The body shows the action as the event left it.
        action.state = state;
        let body = serde_json::to_string(&action.to_wire())?;
        Ok(targets
            .iter()
            .filter(|t| {
                t.matches(
                    event.seq,
                    &event.namespace,
                    state,
                    &action.object_type,
                    &action.verb,
                )
            })
            .map(|t| NewDelivery {
                uuid: Uuid::new_v4(),
                webhook_id: t.id,
                event_seq: event.seq,
                action_uuid: action.uuid,
                state,
                body: body.clone(),
            })
            .collect())
    }
}

/// Whether an action event records the action reaching its state. An
/// `update` event of a Pending action does not: an action is Pending only
/// from its creation, and such an event says that its object's queue moved
/// (its `queue_position` changed), which no webhook's state filter asks for.
fn reaches_state(kind: EventKind, state: ActionState) -> bool {
    !(kind == EventKind::Update && state == ActionState::Pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_move_is_no_state_reached() {
        assert!(reaches_state(EventKind::Create, ActionState::Pending));
        assert!(!reaches_state(EventKind::Update, ActionState::Pending));
        assert!(reaches_state(EventKind::Update, ActionState::InProgress));
        assert!(reaches_state(EventKind::Update, ActionState::Success));
        assert!(reaches_state(EventKind::Create, ActionState::Success));
    }
}
