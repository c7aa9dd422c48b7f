//! Progress of the running actions: handlers report as often as they like,
//! the store sees at most one write per `[worker] progress_interval`.
//!
//! Each running action has a slot on the worker's [`ProgressBoard`] that
//! keeps only its latest report. A flusher task writes every slot that
//! changed since its last write in ONE statement
//! ([`ActionStore::record_progress`](stevedore_core::store::ActionStore::record_progress)),
//! each fenced by the action's lease token, then publishes what was written
//! as one [`Update::Progress`] per namespace. When an action's handler is
//! done, its slot is written one last time (if it changed) before the final
//! state, so the last report is never lost to coalescing.
//!
//! A failed write is retried at the next tick with whatever is latest then;
//! a report whose lease moved on is dropped (the new holder reports its own).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use stevedore_core::dispatch::Dispatcher;
use stevedore_core::messages::Update;
use stevedore_core::progress::{Progress, ProgressEvent, ProgressWrite};
use stevedore_core::store::LeaseToken;
use uuid::Uuid;

/// Counter of progress reports written to the store (after coalescing).
pub const PROGRESS_WRITES_TOTAL: &str = "stevedore_progress_writes_total";

/// The latest progress of each running action of this worker.
#[derive(Default)]
pub struct ProgressBoard {
    slots: Mutex<HashMap<Uuid, Slot>>,
    /// One flush at a time, so an older report never lands after a newer one.
    flushing: tokio::sync::Mutex<()>,
}

struct Slot {
    token: LeaseToken,
    latest: Option<Progress>,
    /// Bumped by every report.
    version: u64,
    /// The version last written (or given up on).
    written: u64,
}

/// Where a handler reports progress: the slot of one running action (or
/// nowhere, for a handler run outside a worker).
#[derive(Clone, Default)]
pub struct ProgressSink {
    slot: Option<(Weak<ProgressBoard>, Uuid)>,
}

impl ProgressSink {
    /// A sink that keeps nothing.
    pub fn discard() -> Self {
        ProgressSink::default()
    }

    /// Replaces the action's latest report. Never waits on the store.
    pub fn report(&self, progress: Progress) {
        let Some((board, uuid)) = &self.slot else { return };
        let Some(board) = board.upgrade() else { return };
        let mut slots = board.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get_mut(uuid) {
            slot.latest = Some(progress);
            slot.version += 1;
        }
    }
}

impl ProgressBoard {
    /// An empty board.
    pub fn new() -> Arc<Self> {
        Arc::new(ProgressBoard::default())
    }

    /// Opens the slot of an action this worker holds with `token`.
    pub fn register(self: &Arc<Self>, uuid: Uuid, token: LeaseToken) -> ProgressSink {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.insert(
            uuid,
            Slot {
                token,
                latest: None,
                version: 0,
                written: 0,
            },
        );
        ProgressSink {
            slot: Some((Arc::downgrade(self), uuid)),
        }
    }

    /// The latest report of an action, written or not.
    pub fn latest(&self, uuid: Uuid) -> Option<Progress> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.get(&uuid).and_then(|s| s.latest.clone())
    }

    /// The reports not yet written (of `only`, when given), with the
    /// version each one is.
    fn changed(&self, only: Option<Uuid>) -> Vec<(ProgressWrite, u64)> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .iter()
            .filter(|(uuid, s)| only.is_none_or(|o| o == **uuid) && s.version > s.written)
            .filter_map(|(uuid, s)| {
                let progress = s.latest.clone()?;
                Some((
                    ProgressWrite {
                        uuid: *uuid,
                        token: s.token,
                        progress,
                    },
                    s.version,
                ))
            })
            .collect()
    }

    fn mark_written(&self, done: &[(ProgressWrite, u64)]) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for (w, version) in done {
            if let Some(slot) = slots.get_mut(&w.uuid) {
                slot.written = slot.written.max(*version);
            }
        }
    }

    /// Writes every changed report (of `only`, when given) in one statement
    /// and publishes what was written. Returns how many were written.
    pub async fn flush(&self, dispatcher: &Dispatcher, only: Option<Uuid>) -> stevedore_core::Result<usize> {
        let _one = self.flushing.lock().await;
        let changed = self.changed(only);
        if changed.is_empty() {
            return Ok(0);
        }
        let writes: Vec<ProgressWrite> = changed.iter().map(|(w, _)| w.clone()).collect();
        let written = dispatcher.store().record_progress(&writes).await?;
        // Written, or refused for a lease that moved on: either way done.
        self.mark_written(&changed);
        metrics::counter!(PROGRESS_WRITES_TOTAL).increment(written.len() as u64);
        let now = chrono::Utc::now();
        let mut by_namespace: BTreeMap<String, Vec<ProgressEvent>> = BTreeMap::new();
        for stored in &written {
            if let Some(report) = ProgressEvent::of(stored, now) {
                by_namespace
                    .entry(report.namespace.clone())
                    .or_default()
                    .push(report);
            }
        }
        for reports in by_namespace.into_values() {
            if let Err(e) = dispatcher
                .broker()
                .publish_update(&Update::Progress { reports })
                .await
            {
                tracing::debug!(error = %e, "progress update publish failed");
            }
        }
        Ok(written.len())
    }

    /// The action's handler is done: writes its last report if it is not
    /// written yet, then closes its slot.
    pub async fn retire(&self, uuid: Uuid, dispatcher: &Dispatcher) {
        if let Err(e) = self.flush(dispatcher, Some(uuid)).await {
            tracing::warn!(action = %uuid, error = %e, "last progress report not written");
        }
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.remove(&uuid);
    }
}

/// Flushes `board` every `interval` until the board is dropped.
pub fn spawn_flusher(
    board: &Arc<ProgressBoard>,
    dispatcher: Dispatcher,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    let board = Arc::downgrade(board);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(board) = board.upgrade() else { return };
            if let Err(e) = board.flush(&dispatcher, None).await {
                tracing::warn!(error = %e, "progress not written; retrying at the next tick");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_latest_report_of_each_changed_action_is_pending() {
        let board = ProgressBoard::new();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let sink_a = board.register(a, LeaseToken(Uuid::new_v4()));
        let _sink_b = board.register(b, LeaseToken(Uuid::new_v4()));
        for p in [10, 20, 30] {
            sink_a.report(Progress::new(p, format!("step {p}")).unwrap());
        }
        let changed = board.changed(None);
        assert_eq!(changed.len(), 1, "b reported nothing");
        assert_eq!(changed[0].0.uuid, a);
        assert_eq!(changed[0].0.progress.percent, 30);
        board.mark_written(&changed);
        assert!(board.changed(None).is_empty());
        sink_a.report(Progress::new(40, "").unwrap());
        assert_eq!(board.changed(Some(b)).len(), 0);
        assert_eq!(board.changed(Some(a)).len(), 1);
        assert_eq!(board.latest(a).unwrap().percent, 40);
        // A report after the slot closed, or to no board, goes nowhere.
        board.slots.lock().unwrap().remove(&a);
        sink_a.report(Progress::new(50, "").unwrap());
        assert!(board.latest(a).is_none());
        ProgressSink::discard().report(Progress::new(1, "").unwrap());
    }
}
