//! The worker's entry in the workers registry ([`stevedore_core::workers`]):
//! registered when the worker starts, renewed every `[worker]
//! registry_heartbeat` with the actions it runs (one statement), removed when
//! it stops gracefully. A worker that dies leaves the list once its
//! `registry_lease` passes; every worker prunes such rows now and then.

use crate::executor::Executor;
use std::sync::Arc;
use std::time::Duration;
use stevedore_core::config::WorkerSettings;
use stevedore_core::store::DynStore;
use stevedore_core::workers::NewWorker;
use tokio_util::sync::CancellationToken;

/// Heartbeats between two prunes of dead workers' rows.
const PRUNE_EVERY: u32 = 12;

/// The name of the host a worker runs on: `HOSTNAME` (what containers
/// set), else the kernel's host name, else `unknown`.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// A worker's registration: what it announces, and its timings.
pub struct Registration {
    store: DynStore,
    worker: NewWorker,
    heartbeat: Duration,
    lease: Duration,
}

impl Registration {
    /// The registration of `worker` with the registry timings of `settings`.
    pub fn new(store: DynStore, worker: NewWorker, settings: &WorkerSettings) -> Self {
        Registration {
            store,
            worker,
            heartbeat: settings.registry_heartbeat,
            lease: settings.registry_lease,
        }
    }

    /// Registers, then heartbeats with `exec`'s running actions until `stop`
    /// fires. A failed write is logged and tried again at the next beat; a
    /// heartbeat that finds no row (pruned while the database was out of
    /// reach) registers again.
    pub async fn run(self: Arc<Self>, exec: Arc<Executor>, stop: CancellationToken) {
        let mut registered = self.register().await;
        let mut beats: u32 = 0;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.heartbeat) => {}
            }
            if !registered {
                registered = self.register().await;
                continue;
            }
            let running = exec.running_ids();
            match self
                .store
                .worker_heartbeat(&self.worker.id, &running, self.lease)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(worker = %self.worker.id, "registry entry gone; registering again");
                    registered = self.register().await;
                }
                Err(e) => tracing::warn!(error = %e, "registry heartbeat failed"),
            }
            beats = beats.wrapping_add(1);
            if beats.is_multiple_of(PRUNE_EVERY) {
                self.prune().await;
            }
        }
    }

    async fn register(&self) -> bool {
        match self.store.register_worker(&self.worker, self.lease).await {
            Ok(()) => {
                tracing::info!(worker = %self.worker.id, "registered in the workers registry");
                self.prune().await;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "registering in the workers registry failed; retrying");
                false
            }
        }
    }

    async fn prune(&self) {
        match self.store.prune_workers().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "dead workers left the registry"),
            Err(e) => tracing::debug!(error = %e, "pruning the workers registry failed"),
        }
    }

    /// Removes the entry (a graceful shutdown).
    pub async fn deregister(&self) {
        match self.store.deregister_worker(&self.worker.id).await {
            Ok(()) => tracing::info!(worker = %self.worker.id, "left the workers registry"),
            Err(e) => tracing::warn!(
                error = %e,
                "leaving the workers registry failed; the entry expires with its lease"
            ),
        }
    }
}
