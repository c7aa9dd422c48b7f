//! [`WebhookStore`] on SQLite: the same promises as the PostgreSQL driver,
//! with the one writer (`BEGIN IMMEDIATE`) in place of row locks.

use super::{json_list, micros_after, now, SqliteStore};
use crate::rows;
use crate::webhook_rows::{self as wr, attempt_row};
use async_trait::async_trait;
use std::time::Duration;
use stevedore_core::store::{Page, Scope, WebhookStore};
use stevedore_core::webhook::{
    Attempt, Delivery, DueDelivery, NewDelivery, NewWebhook, Webhook, WebhookTarget,
};
use stevedore_core::Result;
use uuid::Uuid;

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn create_webhook(&self, new: &NewWebhook) -> Result<Webhook> {
        let row = sqlx::query(&format!(
            "INSERT INTO webhooks (uuid, namespace, url, states, object_type, action, secret, created_at, after_seq) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, COALESCE(max(seq), 0) FROM events \
             RETURNING {}",
            wr::WEBHOOK_COLUMNS
        ))
        .bind(new.uuid.to_string())
        .bind(&new.namespace)
        .bind(&new.url)
        .bind(wr::states_json(&new.states)?)
        .bind(&new.object_type)
        .bind(&new.action)
        .bind(&new.secret)
        .bind(rows::to_micros(now()))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| rows::conflict_if_unique(e, || format!("webhook {} exists", new.uuid)))?;
        wr::webhook_from_row(&row)
    }

    async fn get_webhook(&self, scope: Scope<'_>, uuid: Uuid) -> Result<Option<Webhook>> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM webhooks WHERE uuid = ?1",
            wr::WEBHOOK_COLUMNS
        ))
        .bind(uuid.to_string())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => {
                let webhook = wr::webhook_from_row(&row)?;
                Ok(scope.allows(&webhook.namespace).then_some(webhook))
            }
            None => Ok(None),
        }
    }

    async fn list_webhooks(&self, scope: Scope<'_>, limit: i64, offset: i64) -> Result<Page<Webhook>> {
        let namespaces = rows::scope_namespaces(scope)
            .map(|ns| json_list(&ns))
            .transpose()?;
        const IN_SCOPE: &str = "(?1 IS NULL OR namespace IN (SELECT value FROM json_each(?1)))";
        let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM webhooks WHERE {IN_SCOPE}"))
            .bind(&namespaces)
            .fetch_one(&self.pool)
            .await?;
        let items = sqlx::query(&format!(
            "SELECT {} FROM webhooks WHERE {IN_SCOPE} ORDER BY id LIMIT ?2 OFFSET ?3",
            wr::WEBHOOK_COLUMNS
        ))
        .bind(&namespaces)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(wr::webhook_from_row)
        .collect::<Result<Vec<_>>>()?;
        Ok(Page { items, total })
    }

    async fn save_webhook(&self, webhook: &Webhook) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE webhooks SET url = ?2, states = ?3, object_type = ?4, action = ?5 WHERE uuid = ?1",
        )
        .bind(webhook.uuid.to_string())
        .bind(&webhook.url)
        .bind(wr::states_json(&webhook.states)?)
        .bind(&webhook.object_type)
        .bind(&webhook.action)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_webhook(&self, uuid: Uuid) -> Result<bool> {
        let done = sqlx::query("DELETE FROM webhooks WHERE uuid = ?1")
            .bind(uuid.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn webhook_deliveries(&self, webhook_id: i64, limit: i64, offset: i64) -> Result<Page<Delivery>> {
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE webhook_id = ?1")
            .bind(webhook_id)
            .fetch_one(&self.pool)
            .await?;
        let items = sqlx::query(&format!(
            "SELECT {} FROM webhook_deliveries WHERE webhook_id = ?1 ORDER BY id DESC LIMIT ?2 OFFSET ?3",
            wr::DELIVERY_COLUMNS
        ))
        .bind(webhook_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(wr::delivery_from_row)
        .collect::<Result<Vec<_>>>()?;
        Ok(Page { items, total })
    }

    async fn webhook_targets(&self) -> Result<Vec<WebhookTarget>> {
        sqlx::query("SELECT id, namespace, states, object_type, action, after_seq FROM webhooks ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(wr::target_from_row)
            .collect()
    }

    async fn webhook_cursor(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT seq FROM webhook_cursor WHERE id = 1")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn advance_webhook_cursor(&self, from: i64, to: i64, deliveries: &[NewDelivery]) -> Result<bool> {
        let mut tx = self.begin().await?;
        let moved = sqlx::query("UPDATE webhook_cursor SET seq = ?2 WHERE id = 1 AND seq = ?1")
            .bind(from)
            .bind(to)
            .execute(&mut *tx)
            .await?;
        if moved.rows_affected() == 0 {
            return Ok(false);
        }
        let at = rows::to_micros(now());
        for d in deliveries {
            // Only for a webhook still stored (one deleted meanwhile gets nothing).
            sqlx::query(
                "INSERT INTO webhook_deliveries \
                     (uuid, webhook_id, event_seq, action_uuid, state, body, status, next_attempt_at, created_at) \
                 SELECT ?1, id, ?3, ?4, ?5, ?6, 'pending', ?7, ?7 FROM webhooks WHERE id = ?2 \
                 ON CONFLICT (webhook_id, event_seq) DO NOTHING",
            )
            .bind(d.uuid.to_string())
            .bind(d.webhook_id)
            .bind(d.event_seq)
            .bind(d.action_uuid.to_string())
            .bind(d.state.as_str())
            .bind(&d.body)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn claim_deliveries(&self, limit: i64, lease: Duration, skip: &[i64]) -> Result<Vec<DueDelivery>> {
        let at = now();
        // A read first: an idle sender then never takes the one write lock.
        let due: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM webhook_deliveries \
             WHERE status = 'pending' AND next_attempt_at <= ?1)",
        )
        .bind(rows::to_micros(at))
        .fetch_one(&self.pool)
        .await?;
        if !due {
            return Ok(vec![]);
        }
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = ?3 \
             WHERE id IN (SELECT id FROM webhook_deliveries \
                          WHERE status = 'pending' AND next_attempt_at <= ?2 \
                            AND webhook_id NOT IN (SELECT value FROM json_each(?4)) \
                          ORDER BY next_attempt_at LIMIT ?1) \
             RETURNING id, uuid, webhook_id, body, attempts, \
                 (SELECT url FROM webhooks w WHERE w.id = webhook_id) AS url, \
                 (SELECT secret FROM webhooks w WHERE w.id = webhook_id) AS secret",
        )
        .bind(limit)
        .bind(rows::to_micros(at))
        .bind(micros_after(at, lease))
        .bind(json_list(skip)?)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut out = rows.iter().map(wr::due_from_row).collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|d| d.id);
        Ok(out)
    }

    async fn record_attempt(&self, id: i64, attempt: i32, outcome: &Attempt) -> Result<bool> {
        let row = attempt_row(outcome);
        let at = now();
        let next = row.retry_micros.map(|m| rows::to_micros(at).saturating_add(m));
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = ?3, last_status_code = ?4, last_error = ?5, \
                 next_attempt_at = ?6, \
                 delivered_at = CASE WHEN ?3 = 'delivered' THEN ?7 ELSE delivered_at END \
             WHERE id = ?1 AND attempts = ?2 AND status = 'pending'",
        )
        .bind(id)
        .bind(attempt)
        .bind(row.status)
        .bind(row.code)
        .bind(row.error)
        .bind(next)
        .bind(rows::to_micros(at))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn prune_deliveries(&self, older_than: Duration) -> Result<u64> {
        let done =
            sqlx::query("DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < ?1")
                .bind(super::micros_before(now(), older_than))
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }
}
