//! Failed and refused authentications in the system log, one entry per
//! window and user rather than one per attempt, so a flood of wrong keys
//! cannot flood the log (nor, through retention, push older history out).
//!
//! The first failure for a user name opens a window of
//! `[auth] failure_log_window` and is written at once, as before; further
//! ones in that window are only counted, and when the window closes one
//! entry says how many more there were. Attempts refused by the rate limit
//! ([`crate::auth_limit`]) are counted the same way under their own entry.
//! Counts are kept in the process: those of windows still open when it
//! stops are not written.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use stevedore_core::store::DynStore;
use stevedore_core::syslog::{LogLevel, NewSystemLog};

/// Windows open at once at most; beyond, attempts for further user names
/// are counted together under one operators-only entry.
const MAX_OPEN_WINDOWS: usize = 10_000;

/// The user shown for attempts counted together once too many names are open.
const MANY_USERS: &str = "<many users>";

/// What happened to an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The credentials were checked and are wrong.
    Failed,
    /// The rate limit refused the attempt unchecked.
    Throttled,
}

impl Outcome {
    fn first_message(self) -> &'static str {
        match self {
            Outcome::Failed => "authentication failed: invalid credentials",
            Outcome::Throttled => "authentication refused: too many failed attempts",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Outcome::Failed => "failed",
            Outcome::Throttled => "refused (too many failed attempts)",
        }
    }
}

/// Whose window an attempt counts in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attempt {
    /// The namespace that may read the entry (the named user's, when the
    /// user exists; `None`: operators only).
    pub namespace: Option<String>,
    /// The user name as logs may show it.
    pub user: String,
    /// What happened.
    pub outcome: Outcome,
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    repeats: u64,
}

/// The open windows (pure bookkeeping; [`FailureLog`] writes the entries).
#[derive(Debug)]
pub struct Windows {
    length: Duration,
    open: HashMap<Attempt, Window>,
}

impl Windows {
    /// No open window; each lasts `length`.
    pub fn new(length: Duration) -> Self {
        Windows {
            length,
            open: HashMap::new(),
        }
    }

    /// Counts `attempt` at `now`; returns the entry to write at once when
    /// it opens a window.
    pub fn record(&mut self, mut attempt: Attempt, now: Instant) -> Option<NewSystemLog> {
        if let Some(w) = self.open.get_mut(&attempt) {
            w.repeats += 1;
            return None;
        }
        if self.open.len() >= MAX_OPEN_WINDOWS {
            attempt = Attempt {
                namespace: None,
                user: MANY_USERS.into(),
                outcome: attempt.outcome,
            };
            if let Some(w) = self.open.get_mut(&attempt) {
                w.repeats += 1;
                return None;
            }
        }
        let entry = entry(&attempt, attempt.outcome.first_message().to_string());
        self.open.insert(
            attempt,
            Window {
                opened: now,
                repeats: 0,
            },
        );
        Some(entry)
    }

    /// Closes the windows that ended by `now`; returns one entry for each
    /// that counted repeats.
    pub fn close_due(&mut self, now: Instant) -> Vec<NewSystemLog> {
        let length = self.length;
        let mut due = vec![];
        self.open.retain(|attempt, w| {
            if now.saturating_duration_since(w.opened) < length {
                return true;
            }
            if w.repeats > 0 {
                let message = format!(
                    "authentication {} {} more times within {}",
                    attempt.outcome.verb(),
                    w.repeats,
                    humantime::format_duration(length)
                );
                due.push(entry(attempt, message));
            }
            false
        });
        due
    }
}

fn entry(attempt: &Attempt, message: String) -> NewSystemLog {
    NewSystemLog {
        namespace: attempt.namespace.clone(),
        category: "auth".into(),
        level: LogLevel::Warn,
        user: attempt.user.clone(),
        message,
    }
}

/// Writes failed authentications to the system log through [`Windows`].
/// A task closes due windows every tenth of a window; it ends when the last
/// handle to this log is dropped.
#[derive(Clone)]
pub struct FailureLog {
    inner: Arc<Inner>,
}

struct Inner {
    store: DynStore,
    windows: Mutex<Windows>,
}

impl FailureLog {
    /// A log writing to `store` with windows of `length`; must be called
    /// within a Tokio runtime (it starts the closing task).
    pub fn spawn(store: DynStore, length: Duration) -> Self {
        let inner = Arc::new(Inner {
            store,
            windows: Mutex::new(Windows::new(length)),
        });
        let tick = (length / 10).max(Duration::from_millis(100));
        tokio::spawn(close_windows(Arc::downgrade(&inner), tick));
        FailureLog { inner }
    }

    /// Counts an attempt; writes its entry when it opens a window.
    pub async fn record(&self, attempt: Attempt) {
        let first = match self.inner.windows.lock() {
            Ok(mut w) => w.record(attempt, Instant::now()),
            Err(_) => None,
        };
        if let Some(e) = first {
            write(&self.inner.store, &[e]).await;
        }
    }
}

async fn close_windows(inner: Weak<Inner>, tick: Duration) {
    loop {
        tokio::time::sleep(tick).await;
        let Some(inner) = inner.upgrade() else { return };
        let due = match inner.windows.lock() {
            Ok(mut w) => w.close_due(Instant::now()),
            Err(_) => return,
        };
        if !due.is_empty() {
            write(&inner.store, &due).await;
        }
    }
}

async fn write(store: &DynStore, entries: &[NewSystemLog]) {
    if let Err(e) = store.append_system_log(entries).await {
        tracing::warn!(error = %e, entries = entries.len(), "system log entry not written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(user: &str, outcome: Outcome) -> Attempt {
        Attempt {
            namespace: Some(user.into()),
            user: user.into(),
            outcome,
        }
    }

    #[test]
    fn a_flood_is_one_entry_per_window_with_its_count() {
        let t0 = Instant::now();
        let mut w = Windows::new(Duration::from_secs(60));
        let first = w.record(attempt("alice", Outcome::Failed), t0).unwrap();
        assert_eq!(first.message, "authentication failed: invalid credentials");
        assert_eq!(first.namespace.as_deref(), Some("alice"));
        for i in 1..400 {
            assert!(w
                .record(attempt("alice", Outcome::Failed), t0 + Duration::from_millis(i))
                .is_none());
        }
        assert!(w.close_due(t0 + Duration::from_secs(59)).is_empty(), "still open");
        let due = w.close_due(t0 + Duration::from_secs(60));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].message, "authentication failed 399 more times within 1m");
        // A new window opens with the next failure.
        assert!(w
            .record(attempt("alice", Outcome::Failed), t0 + Duration::from_secs(61))
            .is_some());
    }

    #[test]
    fn users_and_outcomes_have_windows_of_their_own() {
        let t0 = Instant::now();
        let mut w = Windows::new(Duration::from_secs(60));
        assert!(w.record(attempt("alice", Outcome::Failed), t0).is_some());
        assert!(w.record(attempt("bob", Outcome::Failed), t0).is_some());
        let refused = w.record(attempt("alice", Outcome::Throttled), t0).unwrap();
        assert_eq!(
            refused.message,
            "authentication refused: too many failed attempts"
        );
        // A lone failure closes without a second entry.
        assert!(w.close_due(t0 + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn too_many_names_are_counted_together() {
        let t0 = Instant::now();
        let mut w = Windows::new(Duration::from_secs(60));
        for i in 0..MAX_OPEN_WINDOWS {
            assert!(w.record(attempt(&format!("u{i}"), Outcome::Failed), t0).is_some());
        }
        let together = w.record(attempt("one-more", Outcome::Failed), t0).unwrap();
        assert_eq!((together.user.as_str(), together.namespace), (MANY_USERS, None));
        assert!(w.record(attempt("and-another", Outcome::Failed), t0).is_none());
    }
}
