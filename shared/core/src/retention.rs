//! The retention pruner: deletes old history on a timer, as
//! `[retention]` in the config says.
//!
//! **Invariant:** nothing of an unfinished action is ever deleted (the
//! store's `prune` only touches actions in a final state).

use crate::config::RetentionSettings;
use crate::shutdown::Shutdown;
use crate::store::DynStore;

/// Runs [`crate::store::Store::prune`] every `settings.interval` until shutdown
/// (never, when the interval is zero). Concurrent pruners in several processes
/// are harmless: each deletes what is due.
pub async fn run_pruner(store: DynStore, settings: RetentionSettings, shutdown: Shutdown) {
    if settings.interval.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(settings.interval) => {}
        }
        match store.prune(settings.max_age, settings.max_system_log).await {
            Ok(p) if p.actions + p.events + p.system_log + p.sessions > 0 => tracing::info!(
                actions = p.actions,
                events = p.events,
                system_log = p.system_log,
                sessions = p.sessions,
                "retention pruned old history"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
        match store.prune_deliveries(settings.max_age).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "retention pruned old webhook deliveries"),
            Err(e) => tracing::warn!(error = %e, "webhook delivery retention failed"),
        }
    }
}
