//! Webhooks: per namespace, a URL called when actions reach chosen states
//! (optionally only actions on one object type, or of one verb), with the
//! action JSON as its body, signed ([`signature`]), and retried with backoff
//! until delivered or out of attempts.
//!
//! The pieces, and where they live:
//!
//! - here: the domain types, the validation of what a client sends, the one
//!   matching rule ([`WebhookTarget::matches`]) and the backoff of a failed
//!   delivery ([`retry_delay`]);
//! - [`signature`]: the `X-Stevedore-Signature` header (HMAC-SHA256);
//! - [`network`]: which addresses a delivery may connect to (the guard
//!   against server-side request forgery);
//! - the store ([`crate::store::WebhookStore`]): webhooks, the delivery rows
//!   (the truth of every delivery: state, attempts, next attempt) and the
//!   relay's cursor over the events;
//! - the worker (`stevedore_worker::webhooks`): the relay that turns events
//!   into delivery rows, and the sender that claims due rows and calls the URLs.
//!
//! The action's own path pays nothing for webhooks: the relay tails the
//! stored events by `seq`, after they were committed.

pub mod network;
pub mod signature;

use crate::dates;
use crate::state::ActionState;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;
use uuid::Uuid;

/// The resource URI of a webhook.
pub fn webhook_uri(uuid: &Uuid) -> String {
    format!("/api/v1/webhook/{uuid}/")
}

/// Longest URL a webhook may call.
pub const MAX_URL_LEN: usize = 2048;

/// A stored webhook, secret included (the API shows it only once, on create).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Row id (internal: deliveries refer to it).
    pub id: i64,
    /// Public id.
    pub uuid: Uuid,
    /// The namespace whose actions it follows.
    pub namespace: String,
    /// Where deliveries are POSTed (`http://` or `https://`).
    pub url: String,
    /// The action states that trigger a delivery (never empty).
    pub states: Vec<ActionState>,
    /// Only actions on objects of this type, when set.
    pub object_type: Option<String>,
    /// Only actions of this verb (`start`, `create`, …), when set.
    pub action: Option<String>,
    /// The shared signing secret.
    pub secret: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// The last event `seq` stored when it was created: only later events
    /// are delivered to it.
    pub after_seq: i64,
}

impl Webhook {
    /// The JSON the API returns (never with the secret; see [`WebhookJson::secret`]).
    pub fn to_wire(&self) -> WebhookJson {
        WebhookJson {
            uuid: self.uuid,
            resource_uri: webhook_uri(&self.uuid),
            namespace: self.namespace.clone(),
            url: self.url.clone(),
            states: self.states.clone(),
            object_type: self.object_type.clone(),
            action: self.action.clone(),
            created_at: self.created_at,
            secret: None,
        }
    }

    /// What the relay needs of it.
    pub fn target(&self) -> WebhookTarget {
        WebhookTarget {
            id: self.id,
            namespace: self.namespace.clone(),
            states: self.states.clone(),
            object_type: self.object_type.clone(),
            action: self.action.clone(),
            after_seq: self.after_seq,
        }
    }
}

/// The wire form of a webhook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookJson {
    /// Public id.
    pub uuid: Uuid,
    /// `/api/v1/webhook/<uuid>/`.
    pub resource_uri: String,
    /// Its namespace.
    pub namespace: String,
    /// Where deliveries go.
    pub url: String,
    /// Triggering states.
    pub states: Vec<ActionState>,
    /// Object type filter, or null.
    pub object_type: Option<String>,
    /// Verb filter, or null.
    pub action: Option<String>,
    /// When it was created (RFC 2822).
    #[serde(with = "dates::wire")]
    pub created_at: DateTime<Utc>,
    /// The signing secret: only in the answer to the create request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A webhook to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    /// Public id.
    pub uuid: Uuid,
    /// Its namespace.
    pub namespace: String,
    /// Where deliveries go (validated: [`check_url`]).
    pub url: String,
    /// Triggering states (not empty).
    pub states: Vec<ActionState>,
    /// Object type filter.
    pub object_type: Option<String>,
    /// Verb filter.
    pub action: Option<String>,
    /// The signing secret ([`generate_secret`]).
    pub secret: String,
}

/// What the relay matches events against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    /// The webhook's row id.
    pub id: i64,
    /// Its namespace.
    pub namespace: String,
    /// Triggering states.
    pub states: Vec<ActionState>,
    /// Object type filter.
    pub object_type: Option<String>,
    /// Verb filter.
    pub action: Option<String>,
    /// Events up to this `seq` predate it.
    pub after_seq: i64,
}

impl WebhookTarget {
    /// The one matching rule: whether the change of an action (in
    /// `namespace`, on an object of `object_type`, of `verb`) to `state`,
    /// recorded by event `seq`, is delivered to this webhook.
    pub fn matches(
        &self,
        seq: i64,
        namespace: &str,
        state: ActionState,
        object_type: &str,
        verb: &str,
    ) -> bool {
        seq > self.after_seq
            && self.namespace == namespace
            && self.states.contains(&state)
            && self.object_type.as_deref().is_none_or(|t| t == object_type)
            && self.action.as_deref().is_none_or(|a| a == verb)
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not delivered yet: an attempt is due, under way, or waits for its backoff.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed.
    Failed,
}

impl DeliveryStatus {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// A delivery row to insert (the relay's output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// Public id, also the `X-Stevedore-Delivery` header (idempotency key).
    pub uuid: Uuid,
    /// The webhook's row id.
    pub webhook_id: i64,
    /// The event that triggered it; one delivery per (webhook, event).
    pub event_seq: i64,
    /// The action.
    pub action_uuid: Uuid,
    /// The state the action reached.
    pub state: ActionState,
    /// The request body: the action JSON in that state.
    pub body: String,
}

/// A delivery as the log shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// Public id (the `X-Stevedore-Delivery` header).
    pub uuid: Uuid,
    /// The triggering event's `seq`.
    pub event_seq: i64,
    /// The action.
    pub action_uuid: Uuid,
    /// The state it reached.
    pub state: ActionState,
    /// pending / delivered / failed.
    pub status: DeliveryStatus,
    /// Attempts made (or started) so far.
    pub attempts: i32,
    /// The last attempt's HTTP status, if it got an answer.
    pub last_status_code: Option<i32>,
    /// The last failed attempt's error, if any.
    pub last_error: Option<String>,
    /// When the next attempt is due (pending only).
    #[serde(with = "dates::wire_opt")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was recorded.
    #[serde(with = "dates::wire")]
    pub created_at: DateTime<Utc>,
    /// When the receiver accepted it.
    #[serde(with = "dates::wire_opt")]
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A delivery claimed for one attempt: what the sender needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    /// Row id.
    pub id: i64,
    /// Public id (the idempotency header).
    pub uuid: Uuid,
    /// The webhook's row id.
    pub webhook_id: i64,
    /// Where to POST.
    pub url: String,
    /// The signing secret.
    pub secret: String,
    /// The body.
    pub body: String,
    /// This attempt's number (from 1): it fences the outcome's write.
    pub attempt: i32,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// 2xx: delivered.
    Delivered {
        /// The status code.
        status: u16,
    },
    /// Anything else, and when the next attempt is due (`None`: no more).
    Failed {
        /// The status code, when the receiver answered.
        status: Option<u16>,
        /// What went wrong (no secret in it).
        error: String,
        /// The delay before the next attempt, or `None` when attempts are used up.
        retry_in: Option<Duration>,
    },
}

/// A new signing secret: `whsec_` and 32 random bytes in hex.
pub fn generate_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("whsec_{}", hex::encode(bytes))
}

/// The delay before attempt `attempt + 1` after `attempt` failed: `min`,
/// then doubling, never above `max` (backon's exponential backoff, the
/// project's one backoff).
pub fn retry_delay(attempt: i32, min: Duration, max: Duration) -> Duration {
    use backon::{BackoffBuilder, ExponentialBuilder};
    let max = max.max(min);
    let n = usize::try_from(attempt.max(1) - 1).unwrap_or(0);
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .without_max_times()
        .build()
        .nth(n)
        .unwrap_or(max)
}

/// Checks a webhook URL: `http` or `https`, a host, no credentials, at most
/// [`MAX_URL_LEN`] bytes. Where it may connect is decided when it does
/// ([`network`]), on the addresses its host resolves to then.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("url: at most {MAX_URL_LEN} characters"));
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("url: {url:?} is not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "url: scheme {:?} is not allowed; use http or https",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("url: {url:?} names no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("url: credentials in the URL are not allowed; verify the signature instead".into());
    }
    Ok(())
}

/// Parses a list of state names (`["Success", "Failed"]`): not empty, each
/// an action state.
pub fn parse_states(names: &[String]) -> Result<Vec<ActionState>, String> {
    if names.is_empty() {
        return Err("states: name at least one action state".into());
    }
    let mut out = vec![];
    for n in names {
        let state: ActionState = n.parse().map_err(|_| {
            let all: Vec<&str> = ActionState::ALL.iter().map(|s| s.as_str()).collect();
            format!("states: unknown state {n:?}; use {}", all.join(", "))
        })?;
        if !out.contains(&state) {
            out.push(state);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> WebhookTarget {
        WebhookTarget {
            id: 1,
            namespace: "alice".into(),
            states: vec![ActionState::Success, ActionState::Failed],
            object_type: Some("service".into()),
            action: None,
            after_seq: 10,
        }
    }

    #[test]
    fn a_webhook_matches_its_namespace_states_filters_and_later_events() {
        let t = target();
        assert!(t.matches(11, "alice", ActionState::Success, "service", "start"));
        assert!(
            !t.matches(10, "alice", ActionState::Success, "service", "start"),
            "older"
        );
        assert!(
            !t.matches(11, "bob", ActionState::Success, "service", "start"),
            "tenant"
        );
        assert!(
            !t.matches(11, "alice", ActionState::InProgress, "service", "start"),
            "state"
        );
        assert!(
            !t.matches(11, "alice", ActionState::Success, "node", "start"),
            "type"
        );
        let t = WebhookTarget {
            action: Some("start".into()),
            ..target()
        };
        assert!(t.matches(11, "alice", ActionState::Failed, "service", "start"));
        assert!(
            !t.matches(11, "alice", ActionState::Failed, "service", "stop"),
            "verb"
        );
    }

    #[test]
    fn urls_and_states_are_checked() {
        assert!(check_url("https://hooks.example.com/x?y=1").is_ok());
        assert!(check_url("http://127.0.0.1:8080/").is_ok());
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "not a url",
            "http://user:pw@example.com/",
            "javascript:alert(1)",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert!(check_url(&format!("https://e.com/{}", "a".repeat(MAX_URL_LEN))).is_err());
        assert_eq!(
            parse_states(&["Success".into(), "Failed".into(), "Success".into()]).unwrap(),
            vec![ActionState::Success, ActionState::Failed]
        );
        assert!(parse_states(&[]).is_err());
        assert!(parse_states(&["Done".into()]).unwrap_err().contains("Done"));
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(10));
        let delays: Vec<u64> = (1..=6).map(|a| retry_delay(a, min, max).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn secrets_are_random_and_long() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), "whsec_".len() + 64);
    }
}
