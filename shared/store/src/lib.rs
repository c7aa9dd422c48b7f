//! Stevedore's storage drivers: [`postgres::PgStore`] for production and
//! [`sqlite::SqliteStore`] for `stevedore dev`. Each implements the
//! `stevedore-core` store traits — the reads, claims, heartbeats and logs —
//! and the lifecycle engine's per-transaction primitives
//! ([`stevedore_core::lifecycle::Driver`]); the lifecycle itself is the
//! core's. Both pass one conformance suite (`tests/conformance.rs`).

pub mod postgres;
mod rows;
pub mod sqlite;
mod unnest;
mod webhook_rows;

use std::sync::Arc;
use stevedore_core::store::{redact_url, DynStore};
use stevedore_core::Result;

/// Opens the store a URL names: `postgres://…` / `postgresql://…` or
/// `sqlite://path` (created if missing). Does not migrate.
pub async fn connect(url: &str) -> Result<DynStore> {
    connect_with(url, &stevedore_core::config::DatabaseSettings::default()).await
}

/// [`connect`] with the config's `[database]` settings (PostgreSQL only).
pub async fn connect_with(
    url: &str,
    settings: &stevedore_core::config::DatabaseSettings,
) -> Result<DynStore> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PgStore::connect_with_timeout(
                url,
                postgres::DEFAULT_MAX_CONNECTIONS,
                settings.acquire_timeout,
            )
            .await?,
        ))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(url).await?))
    } else {
        Err(stevedore_core::Error::Config(format!(
            "unsupported database URL scheme in {:?}: use postgres:// or sqlite://",
            redact_url(url)
        )))
    }
}
