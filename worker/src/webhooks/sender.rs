//! The webhook sender: claims due deliveries and makes one attempt each.
//!
//! At most `[webhooks] concurrency` attempts run at once in a process, and
//! at most `per_webhook` of them for one webhook (a webhook at its cap is
//! skipped by the claim), so a receiver that hangs until the timeout holds
//! only its own slots. A failed attempt schedules the next after
//! [`retry_delay`]; after `max_attempts` the delivery is failed.

use super::guard::GuardedClient;
use std::collections::HashMap;
use std::sync::Arc;
use stevedore_core::config::WebhookSettings;
use stevedore_core::shutdown::Shutdown;
use stevedore_core::store::DynStore;
use stevedore_core::webhook::signature::{sign, DELIVERY_HEADER, SIGNATURE_HEADER};
use stevedore_core::webhook::{retry_delay, Attempt, DueDelivery};
use tokio::task::JoinSet;

/// See the module docs.
pub struct Sender {
    store: DynStore,
    settings: Arc<WebhookSettings>,
    client: GuardedClient,
}

impl Sender {
    /// A sender with the client of `settings` (its network policy and timeout).
    pub fn new(store: DynStore, settings: Arc<WebhookSettings>) -> reqwest::Result<Self> {
        let client = GuardedClient::new(settings.network_policy(), settings.timeout)?;
        Ok(Sender {
            store,
            settings,
            client,
        })
    }

    /// Claims and sends until `shutdown`, then waits up to [`SHUTDOWN_GRACE`]
    /// for the attempts under way.
    pub async fn run(self, shutdown: Shutdown) {
        let mut running: JoinSet<i64> = JoinSet::new();
        let mut per_webhook: HashMap<i64, usize> = HashMap::new();
        let cap = self.settings.per_webhook;
        while !shutdown.is_triggered() {
            let free = self.settings.concurrency.saturating_sub(running.len());
            let mut full = false;
            if free > 0 {
                let skip: Vec<i64> = per_webhook
                    .iter()
                    .filter(|(_, n)| **n >= cap)
                    .map(|(id, _)| *id)
                    .collect();
                // No webhook may pass its cap whatever this claim returns.
                let busiest = per_webhook
                    .values()
                    .filter(|n| **n < cap)
                    .max()
                    .copied()
                    .unwrap_or(0);
                let limit = free.min(cap - busiest);
                match self
                    .store
                    .claim_deliveries(limit as i64, self.settings.claim_lease(), &skip)
                    .await
                {
                    Ok(due) => {
                        full = !due.is_empty() && due.len() == limit;
                        for d in due {
                            *per_webhook.entry(d.webhook_id).or_default() += 1;
                            let (store, client, settings) =
                                (self.store.clone(), self.client.clone(), self.settings.clone());
                            running.spawn(async move {
                                let webhook = d.webhook_id;
                                deliver(&store, &client, &settings, d).await;
                                webhook
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming webhook deliveries failed; retrying"),
                }
            }
            if full {
                // More may be due: claim again at once, after reaping what ended.
                while let Some(done) = running.try_join_next() {
                    finished(&mut per_webhook, done);
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                Some(done) = running.join_next(), if !running.is_empty() => finished(&mut per_webhook, done),
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
            }
            while let Some(done) = running.try_join_next() {
                finished(&mut per_webhook, done);
            }
        }
        // Attempts under way get a moment to finish; the rest are dropped
        // and their rows are due again once their claims end.
        let drain = async { while running.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::info!("webhook attempts still under way at shutdown are left to be retried");
        }
    }
}

/// How long a stopping sender waits for the attempts under way.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

fn finished(per_webhook: &mut HashMap<i64, usize>, done: Result<i64, tokio::task::JoinError>) {
    if let Ok(webhook) = done {
        if let Some(n) = per_webhook.get_mut(&webhook) {
            *n -= 1;
            if *n == 0 {
                per_webhook.remove(&webhook);
            }
        }
    }
}

/// One attempt of `d`, and its outcome recorded.
async fn deliver(store: &DynStore, client: &GuardedClient, settings: &WebhookSettings, d: DueDelivery) {
    let outcome = match attempt(client, &d).await {
        Ok(status) => Attempt::Delivered { status },
        Err((status, error)) => Attempt::Failed {
            status,
            error,
            retry_in: (d.attempt < settings.max_attempts)
                .then(|| retry_delay(d.attempt, settings.backoff_min, settings.backoff_max)),
        },
    };
    let label = match &outcome {
        Attempt::Delivered { .. } => "delivered",
        Attempt::Failed {
            retry_in: Some(_), ..
        } => "retry",
        Attempt::Failed { retry_in: None, .. } => "failed",
    };
    metrics::counter!(super::WEBHOOK_ATTEMPTS_TOTAL, "outcome" => label).increment(1);
    match &outcome {
        Attempt::Delivered { status } => {
            tracing::info!(delivery = %d.uuid, attempt = d.attempt, status, "webhook delivered")
        }
        Attempt::Failed { error, retry_in, .. } => tracing::warn!(
            delivery = %d.uuid,
            attempt = d.attempt,
            error = %error,
            retry_in = ?retry_in,
            "webhook attempt failed"
        ),
    }
    match store.record_attempt(d.id, d.attempt, &outcome).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(delivery = %d.uuid, "a later attempt holds the delivery; outcome dropped")
        }
        // The row stays due once its claim ends: the delivery is tried again.
        Err(e) => tracing::warn!(delivery = %d.uuid, error = %e, "webhook outcome not recorded"),
    }
}

/// POSTs the signed body: the 2xx status, or the status (if any) and what went wrong.
async fn attempt(client: &GuardedClient, d: &DueDelivery) -> Result<u16, (Option<u16>, String)> {
    let url = reqwest::Url::parse(&d.url).map_err(|e| (None, format!("invalid url: {e}")))?;
    client.check_literal(&url).map_err(|e| (None, e))?;
    let timestamp = chrono::Utc::now().timestamp();
    let response = client
        .http()
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, sign(&d.secret, timestamp, d.body.as_bytes()))
        .header(DELIVERY_HEADER, d.uuid.to_string())
        .body(d.body.clone())
        .send()
        .await
        .map_err(|e| (None, describe(e)))?;
    let status = response.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else if status.is_redirection() {
        Err((
            Some(status.as_u16()),
            format!("HTTP {status}: redirects are not followed"),
        ))
    } else {
        Err((Some(status.as_u16()), format!("HTTP {status}")))
    }
}

/// A request error and its causes, without the URL (its query may hold the
/// receiver's token).
fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut out = kind.to_string();
    let e = e.without_url();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
