//! The workers registry on PostgreSQL: one row per worker, its instants
//! from the database's clock, so the lease of every worker is measured by
//! one clock however theirs drift.

use super::PgStore;
use crate::rows::{self, RowExt};
use async_trait::async_trait;
use std::time::Duration;
use stevedore_core::store::{Page, WorkerRegistry};
use stevedore_core::workers::{NewWorker, WorkerInfo};
use stevedore_core::Result;
use uuid::Uuid;

const COLUMNS: &str = "id, host, pid, version, started_at, concurrency, \
                       to_json(running)::text AS running, heartbeat_at, expires_at";

#[async_trait]
impl WorkerRegistry for PgStore {
    async fn register_worker(&self, w: &NewWorker, lease: Duration) -> Result<()> {
        sqlx::query(
            "INSERT INTO workers (id, host, pid, version, started_at, concurrency, running, heartbeat_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, '{}', now(), now() + $7 * interval '1 microsecond') \
             ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, \
               version = EXCLUDED.version, started_at = EXCLUDED.started_at, \
               concurrency = EXCLUDED.concurrency, running = '{}', \
               heartbeat_at = EXCLUDED.heartbeat_at, expires_at = EXCLUDED.expires_at",
        )
        .bind(&w.id)
        .bind(&w.host)
        .bind(w.pid)
        .bind(&w.version)
        .bind(w.started_at)
        .bind(w.concurrency)
        .bind(rows::duration_micros(lease))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn worker_heartbeat(&self, id: &str, running: &[Uuid], lease: Duration) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE workers SET running = $2, heartbeat_at = now(), \
               expires_at = now() + $3 * interval '1 microsecond' WHERE id = $1",
        )
        .bind(id)
        .bind(running)
        .bind(rows::duration_micros(lease))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn deregister_worker(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM workers WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn live_workers(&self, limit: i64, offset: i64) -> Result<Page<WorkerInfo>> {
        // The count comes with the page, from the same snapshot, so a worker
        // registering meanwhile cannot make them disagree.
        let found = sqlx::query(&format!(
            "SELECT {COLUMNS}, count(*) OVER () AS total FROM workers WHERE expires_at > now() \
             ORDER BY started_at, id LIMIT $1 OFFSET $2"
        ))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total = match found.first() {
            Some(row) => row.int("total")?,
            None if offset == 0 => 0,
            None => {
                sqlx::query_scalar("SELECT count(*) FROM workers WHERE expires_at > now()")
                    .fetch_one(&self.pool)
                    .await?
            }
        };
        let items = found
            .iter()
            .map(rows::worker_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page { items, total })
    }

    async fn live_worker(&self, id: &str) -> Result<Option<WorkerInfo>> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM workers WHERE id = $1 AND expires_at > now()"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(rows::worker_from_row)
        .transpose()
    }

    async fn prune_workers(&self) -> Result<u64> {
        let done = sqlx::query("DELETE FROM workers WHERE expires_at <= now()")
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
