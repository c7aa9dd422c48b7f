//! Webhook rows ↔ domain values, shared by both drivers (see [`crate::rows`]).

use crate::rows::{self, RowExt};
use stevedore_core::state::ActionState;
use stevedore_core::webhook::{Attempt, Delivery, DeliveryStatus, DueDelivery, Webhook, WebhookTarget};
use stevedore_core::{Error, Result};

/// Columns of a webhook (PostgreSQL: its JSON as text).
pub(crate) const PG_WEBHOOK_COLUMNS: &str =
    "id, uuid, namespace, url, states::text AS states, object_type, action, secret, created_at, after_seq";
/// Columns of a webhook (SQLite).
pub(crate) const WEBHOOK_COLUMNS: &str =
    "id, uuid, namespace, url, states, object_type, action, secret, created_at, after_seq";
/// Columns of a delivery as the log shows it.
pub(crate) const DELIVERY_COLUMNS: &str = "uuid, event_seq, action_uuid, state, status, attempts, \
     last_status_code, last_error, next_attempt_at, created_at, delivered_at";

fn states(row: &impl RowExt) -> Result<Vec<ActionState>> {
    row.strings("states")?
        .iter()
        .map(|s| rows::parse_state(s))
        .collect()
}

/// The stored states of a webhook, as JSON text.
pub(crate) fn states_json(states: &[ActionState]) -> Result<String> {
    Ok(serde_json::to_string(&rows::state_names(states))?)
}

/// A webhook row.
pub(crate) fn webhook_from_row(row: &impl RowExt) -> Result<Webhook> {
    Ok(Webhook {
        id: row.int("id")?,
        uuid: row.uuid("uuid")?,
        namespace: row.text("namespace")?,
        url: row.text("url")?,
        states: states(row)?,
        object_type: row.opt_text("object_type")?,
        action: row.opt_text("action")?,
        secret: row.text("secret")?,
        created_at: row.time("created_at")?,
        after_seq: row.int("after_seq")?,
    })
}

/// A webhook row as the relay needs it.
pub(crate) fn target_from_row(row: &impl RowExt) -> Result<WebhookTarget> {
    Ok(WebhookTarget {
        id: row.int("id")?,
        namespace: row.text("namespace")?,
        states: states(row)?,
        object_type: row.opt_text("object_type")?,
        action: row.opt_text("action")?,
        after_seq: row.int("after_seq")?,
    })
}

/// A delivery row ([`DELIVERY_COLUMNS`]).
pub(crate) fn delivery_from_row(row: &impl RowExt) -> Result<Delivery> {
    let status = row.text("status")?;
    Ok(Delivery {
        uuid: row.uuid("uuid")?,
        event_seq: row.int("event_seq")?,
        action_uuid: row.uuid("action_uuid")?,
        state: row.state("state")?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| Error::Internal(format!("stored delivery status {status:?}")))?,
        attempts: row.int32("attempts")?,
        last_status_code: row.opt_int32("last_status_code")?,
        last_error: row.opt_text("last_error")?,
        next_attempt_at: row.opt_time("next_attempt_at")?,
        created_at: row.time("created_at")?,
        delivered_at: row.opt_time("delivered_at")?,
    })
}

/// A claimed delivery row (`id, uuid, webhook_id, body, attempts, url, secret`).
pub(crate) fn due_from_row(row: &impl RowExt) -> Result<DueDelivery> {
    Ok(DueDelivery {
        id: row.int("id")?,
        uuid: row.uuid("uuid")?,
        webhook_id: row.int("webhook_id")?,
        url: row.text("url")?,
        secret: row.text("secret")?,
        body: row.text("body")?,
        attempt: row.int32("attempts")?,
    })
}

/// What an attempt's outcome writes: status, status code, error, and the
/// delay until the next attempt in microseconds (`None`: no next attempt).
pub(crate) struct AttemptRow<'a> {
    pub status: &'static str,
    pub code: Option<i32>,
    pub error: Option<&'a str>,
    pub retry_micros: Option<i64>,
}

/// The columns an outcome writes.
pub(crate) fn attempt_row(outcome: &Attempt) -> AttemptRow<'_> {
    match outcome {
        Attempt::Delivered { status } => AttemptRow {
            status: DeliveryStatus::Delivered.as_str(),
            code: Some(i32::from(*status)),
            error: None,
            retry_micros: None,
        },
        Attempt::Failed {
            status,
            error,
            retry_in,
        } => AttemptRow {
            status: if retry_in.is_some() {
                DeliveryStatus::Pending.as_str()
            } else {
                DeliveryStatus::Failed.as_str()
            },
            code: status.map(i32::from),
            error: Some(error.as_str()),
            retry_micros: retry_in.map(rows::duration_micros),
        },
    }
}
