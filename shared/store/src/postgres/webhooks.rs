//! [`WebhookStore`] on PostgreSQL: webhooks, delivery rows, the relay's cursor.
//!
//! The sender's claim takes due rows `FOR UPDATE SKIP LOCKED`, so senders
//! in several workers never wait on each other nor claim a row twice; the
//! relay's cursor is one row, whose guarded update serialises relays.

use super::PgStore;
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
impl WebhookStore for PgStore {
    async fn create_webhook(&self, new: &NewWebhook) -> Result<Webhook> {
        let row = sqlx::query(&format!(
            "INSERT INTO webhooks (uuid, namespace, url, states, object_type, action, secret, after_seq) \
             SELECT $1, $2, $3, $4::jsonb, $5, $6, $7, COALESCE(max(seq), 0) FROM events \
             RETURNING {}",
            wr::PG_WEBHOOK_COLUMNS
        ))
        .bind(new.uuid)
        .bind(&new.namespace)
        .bind(&new.url)
        .bind(wr::states_json(&new.states)?)
        .bind(&new.object_type)
        .bind(&new.action)
        .bind(&new.secret)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| rows::conflict_if_unique(e, || format!("webhook {} exists", new.uuid)))?;
        wr::webhook_from_row(&row)
    }

    async fn get_webhook(&self, scope: Scope<'_>, uuid: Uuid) -> Result<Option<Webhook>> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM webhooks WHERE uuid = $1",
            wr::PG_WEBHOOK_COLUMNS
        ))
        .bind(uuid)
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
        let namespaces = rows::scope_namespaces(scope);
        let total: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM webhooks WHERE ($1::text[] IS NULL OR namespace = ANY($1))",
        )
        .bind(&namespaces)
        .fetch_one(&self.pool)
        .await?;
        let items = sqlx::query(&format!(
            "SELECT {} FROM webhooks WHERE ($1::text[] IS NULL OR namespace = ANY($1)) \
             ORDER BY id LIMIT $2 OFFSET $3",
            wr::PG_WEBHOOK_COLUMNS
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
            "UPDATE webhooks SET url = $2, states = $3::jsonb, object_type = $4, action = $5 WHERE uuid = $1",
        )
        .bind(webhook.uuid)
        .bind(&webhook.url)
        .bind(wr::states_json(&webhook.states)?)
        .bind(&webhook.object_type)
        .bind(&webhook.action)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_webhook(&self, uuid: Uuid) -> Result<bool> {
        let done = sqlx::query("DELETE FROM webhooks WHERE uuid = $1")
            .bind(uuid)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn webhook_deliveries(&self, webhook_id: i64, limit: i64, offset: i64) -> Result<Page<Delivery>> {
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1")
            .bind(webhook_id)
            .fetch_one(&self.pool)
            .await?;
        let items = sqlx::query(&format!(
            "SELECT {} FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
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
        sqlx::query(
            "SELECT id, namespace, states::text AS states, object_type, action, after_seq \
             FROM webhooks ORDER BY id",
        )
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
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query("UPDATE webhook_cursor SET seq = $2 WHERE id = 1 AND seq = $1")
            .bind(from)
            .bind(to)
            .execute(&mut *tx)
            .await?;
        if moved.rows_affected() == 0 {
            return Ok(false);
        }
        if !deliveries.is_empty() {
            let uuids: Vec<Uuid> = deliveries.iter().map(|d| d.uuid).collect();
            let hooks: Vec<i64> = deliveries.iter().map(|d| d.webhook_id).collect();
            let seqs: Vec<i64> = deliveries.iter().map(|d| d.event_seq).collect();
            let actions: Vec<Uuid> = deliveries.iter().map(|d| d.action_uuid).collect();
            let states: Vec<&str> = deliveries.iter().map(|d| d.state.as_str()).collect();
            let bodies: Vec<&str> = deliveries.iter().map(|d| d.body.as_str()).collect();
            // Joined with webhooks: a webhook deleted meanwhile gets nothing.
            sqlx::query(
                "INSERT INTO webhook_deliveries \
                     (uuid, webhook_id, event_seq, action_uuid, state, body, status, next_attempt_at) \
                 SELECT t.u, t.w, t.e, t.a, t.s, t.b, 'pending', now() \
                 FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::uuid[], $5::text[], $6::text[]) \
                     AS t(u, w, e, a, s, b) \
                 JOIN webhooks ON webhooks.id = t.w \
                 ON CONFLICT (webhook_id, event_seq) DO NOTHING",
            )
            .bind(&uuids)
            .bind(&hooks)
            .bind(&seqs)
            .bind(&actions)
            .bind(&states)
            .bind(&bodies)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn claim_deliveries(&self, limit: i64, lease: Duration, skip: &[i64]) -> Result<Vec<DueDelivery>> {
        sqlx::query(
            "WITH due AS ( \
                 SELECT id FROM webhook_deliveries \
                 WHERE status = 'pending' AND next_attempt_at <= now() AND NOT (webhook_id = ANY($3)) \
                 ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED \
             ), claimed AS ( \
                 UPDATE webhook_deliveries d \
                 SET attempts = d.attempts + 1, next_attempt_at = now() + $2 * interval '1 microsecond' \
                 FROM due WHERE d.id = due.id \
                 RETURNING d.id, d.uuid, d.webhook_id, d.body, d.attempts \
             ) \
             SELECT c.id, c.uuid, c.webhook_id, c.body, c.attempts, w.url, w.secret \
             FROM claimed c JOIN webhooks w ON w.id = c.webhook_id ORDER BY c.id",
        )
        .bind(limit)
        .bind(rows::duration_micros(lease))
        .bind(skip)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(wr::due_from_row)
        .collect()
    }

    async fn record_attempt(&self, id: i64, attempt: i32, outcome: &Attempt) -> Result<bool> {
        let row = attempt_row(outcome);
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = $3, last_status_code = $4, last_error = $5, \
                 next_attempt_at = CASE WHEN $6::BIGINT IS NULL THEN NULL \
                                        ELSE now() + $6 * interval '1 microsecond' END, \
                 delivered_at = CASE WHEN $3 = 'delivered' THEN now() ELSE delivered_at END \
             WHERE id = $1 AND attempts = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(attempt)
        .bind(row.status)
        .bind(row.code)
        .bind(row.error)
        .bind(row.retry_micros)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn prune_deliveries(&self, older_than: Duration) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE status <> 'pending' \
               AND created_at < now() - $1 * interval '1 microsecond'",
        )
        .bind(rows::duration_micros(older_than))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
