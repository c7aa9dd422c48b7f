//! Webhook deliveries, run by every worker process (and `stevedore dev`):
//!
//! - [`relay`]: tails the stored events by `seq` from a cursor in the
//!   database, matches action events against the webhooks, and records one
//!   delivery row per match, moving the cursor in the same transaction;
//! - [`sender`]: claims due delivery rows, POSTs each signed body with a
//!   per-request timeout, at most `[webhooks] per_webhook` at once to one
//!   webhook, and records the outcome (delivered, or the next attempt after
//!   an exponential backoff, or failed once attempts are used up);
//! - [`guard`]: the HTTP client, which connects only where the
//!   [network policy](stevedore_core::webhook::network) allows.
//!
//! The delivery rows are the queue: a worker killed mid-attempt leaves its
//! claimed rows due again once their claim's lease ends, so a delivery is
//! made at least once (the `X-Stevedore-Delivery` header is the same for
//! every attempt, the receiver's idempotency key).

pub mod guard;
pub mod relay;
pub mod sender;

use std::sync::Arc;
use stevedore_core::config::WebhookSettings;
use stevedore_core::shutdown::Shutdown;
use stevedore_core::store::DynStore;

/// Counter of delivery attempts, by outcome (`delivered`, `retry`: failed
/// and scheduled again, `failed`: failed for good).
pub const WEBHOOK_ATTEMPTS_TOTAL: &str = "stevedore_webhook_attempts_total";
/// Counter of delivery rows the relay recorded.
pub const WEBHOOK_DELIVERIES_TOTAL: &str = "stevedore_webhook_deliveries_total";

/// Starts the relay and the sender; both stop on `shutdown` (the sender
/// waits a moment for the attempts under way: [`sender::SHUTDOWN_GRACE`]).
pub fn spawn(store: DynStore, settings: WebhookSettings, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
    let settings = Arc::new(settings);
    let relay = relay::Relay::new(store.clone(), settings.poll_interval);
    let sender = sender::Sender::new(store, settings);
    tokio::spawn(async move {
        let sender = match sender {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "webhook sender not started");
                return;
            }
        };
        tokio::join!(relay.run(shutdown.clone()), sender.run(shutdown));
    })
}
