//! The workers registry on SQLite (`stevedore dev`: one process, one clock).

use super::{micros_after, now, SqliteStore};
use crate::rows::{self, RowExt};
use async_trait::async_trait;
use std::time::Duration;
use stevedore_core::store::{Page, WorkerRegistry};
use stevedore_core::workers::{NewWorker, WorkerInfo};
use stevedore_core::Result;
use uuid::Uuid;

const COLUMNS: &str = "id, host, pid, version, started_at, concurrency, running, heartbeat_at, expires_at";

#[async_trait]
impl WorkerRegistry for SqliteStore {
    async fn register_worker(&self, w: &NewWorker, lease: Duration) -> Result<()> {
        let at = now();
        sqlx::query(
            "INSERT INTO workers (id, host, pid, version, started_at, concurrency, running, heartbeat_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, '[]', ?7, ?8) \
             ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, \
               version = excluded.version, started_at = excluded.started_at, \
               concurrency = excluded.concurrency, running = '[]', \
               heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at",
        )
        .bind(&w.id)
        .bind(&w.host)
        .bind(w.pid)
        .bind(&w.version)
        .bind(rows::to_micros(w.started_at))
        .bind(w.concurrency)
        .bind(rows::to_micros(at))
        .bind(micros_after(at, lease))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn worker_heartbeat(&self, id: &str, running: &[Uuid], lease: Duration) -> Result<bool> {
        let at = now();
        let done =
            sqlx::query("UPDATE workers SET running = ?2, heartbeat_at = ?3, expires_at = ?4 WHERE id = ?1")
                .bind(id)
                .bind(serde_json::to_string(running)?)
                .bind(rows::to_micros(at))
                .bind(micros_after(at, lease))
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn deregister_worker(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM workers WHERE id = ?1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn live_workers(&self, limit: i64, offset: i64) -> Result<Page<WorkerInfo>> {
        // The count comes with the page (see the PostgreSQL driver).
        let at = rows::to_micros(now());
        let found = sqlx::query(&format!(
            "SELECT {COLUMNS}, count(*) OVER () AS total FROM workers WHERE expires_at > ?1 \
             ORDER BY started_at, id LIMIT ?2 OFFSET ?3"
        ))
        .bind(at)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total = match found.first() {
            Some(row) => row.int("total")?,
            None if offset == 0 => 0,
            None => {
                sqlx::query_scalar("SELECT count(*) FROM workers WHERE expires_at > ?1")
                    .bind(at)
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
            "SELECT {COLUMNS} FROM workers WHERE id = ?1 AND expires_at > ?2"
        ))
        .bind(id)
        .bind(rows::to_micros(now()))
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(rows::worker_from_row)
        .transpose()
    }

    async fn prune_workers(&self) -> Result<u64> {
        let done = sqlx::query("DELETE FROM workers WHERE expires_at <= ?1")
            .bind(rows::to_micros(now()))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
