//! WAL checkpoints off the write path.
//!
//! In WAL mode with `synchronous = NORMAL` a commit appends to the log and
//! does not sync; SQLite syncs when it copies the log back into the
//! database (a checkpoint). By default the commit that takes the log past
//! 1,000 pages runs that checkpoint itself, two `fsync`s of 1–11 ms each
//! here, while every other transaction waits for the store's one
//! connection: about one action in forty paid it, which was the tail of
//! `stevedore dev`'s latency.
//!
//! So the write connection checkpoints only as a safety net, past
//! [`SAFETY_NET_PAGES`] of log, and a connection of its own runs a
//! `PASSIVE` checkpoint every [`INTERVAL`]. A passive checkpoint never waits
//! for the writer nor makes it wait, and durability is unchanged: what a
//! commit wrote is in the log either way, and an unfinished checkpoint is
//! finished by the next one (or when the database is opened again).

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::ConnectOptions;
use std::time::Duration;
use tokio::sync::oneshot;

/// How often the log is copied back into the database.
pub(super) const INTERVAL: Duration = Duration::from_secs(1);

/// Log pages past which the write connection checkpoints itself after all
/// (SQLite's own rule, at 10 times its default): reached only if the
/// background checkpoints stopped (a log of about 40 MiB).
pub(super) const SAFETY_NET_PAGES: u32 = 10_000;

/// Stops the background checkpoints when dropped (with the last clone of
/// the store that started them).
#[derive(Debug)]
pub(super) struct Checkpointer {
    _stop: oneshot::Sender<()>,
}

/// Whether `url` names an in-memory database (no log, nothing to checkpoint).
pub(super) fn in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// Starts checkpointing the database `options` opens, from a connection of
/// its own, until the returned handle is dropped.
pub(super) fn spawn(options: SqliteConnectOptions) -> Checkpointer {
    let (stop, mut stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + INTERVAL, INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conn = None;
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = tick.tick() => {}
            }
            if conn.is_none() {
                match options.connect().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open the SQLite checkpoint connection; retrying");
                        continue;
                    }
                }
            }
            if let Some(c) = conn.as_mut() {
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&mut *c)
                    .await
                {
                    tracing::warn!(error = %e, "SQLite checkpoint failed; reconnecting");
                    conn = None;
                }
            }
        }
    });
    Checkpointer { _stop: stop }
}

#[cfg(test)]
mod tests {
    use super::super::SqliteStore;
    use super::*;
    use sqlx::Row;
    use stevedore_core::store::Database;

    fn size(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    /// The log reaches the database file without a commit checkpointing it:
    /// the write connection's threshold is far above what migrating writes.
    #[tokio::test]
    async fn the_log_is_checkpointed_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stevedore.db");
        let store = SqliteStore::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("connect");
        let threshold: i64 = sqlx::query("PRAGMA wal_autocheckpoint")
            .fetch_one(store.pool())
            .await
            .unwrap()
            .get(0);
        assert_eq!(threshold, i64::from(SAFETY_NET_PAGES));
        store.migrate().await.expect("migrate");
        let wal = dir.path().join("stevedore.db-wal");
        assert!(size(&wal) > 0, "the migrations are in the log");
        let before = size(&path);
        let deadline = std::time::Instant::now() + INTERVAL * 10;
        while size(&path) <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stayed at {before} bytes: no checkpoint ran"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[test]
    fn memory_databases_have_no_log_to_checkpoint() {
        assert!(in_memory("sqlite::memory:"));
        assert!(in_memory("sqlite://file:x?mode=memory&cache=shared"));
        assert!(!in_memory("sqlite:///var/lib/stevedore/stevedore.db"));
    }
}
