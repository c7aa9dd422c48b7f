//! Conditions a process reports on `/readyz` beyond its own pings: a
//! worker holding job messages while the database is unreachable, a broker
//! that blocked publishing (a memory or disk alarm). Each part of the process
//! that notices one sets it under its own name and clears it when it is over.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A process's current conditions, shared by its tasks (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Health {
    conditions: Arc<Mutex<BTreeMap<&'static str, Condition>>>,
}

/// One reported condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// What an operator should read about it.
    pub message: String,
    /// Whether it makes the process unready (`/readyz` answers 503), or is
    /// only reported while the process keeps serving.
    pub unready: bool,
}

impl Health {
    /// No conditions.
    pub fn new() -> Self {
        Health::default()
    }

    /// Sets (or replaces) the condition `name`, which makes the process
    /// unready while it lasts.
    pub fn set_unready(&self, name: &'static str, message: impl Into<String>) {
        self.set(name, message.into(), true);
    }

    /// Sets (or replaces) the condition `name`, reported while the process
    /// stays ready (it still serves, in a degraded way).
    pub fn set_degraded(&self, name: &'static str, message: impl Into<String>) {
        self.set(name, message.into(), false);
    }

    fn set(&self, name: &'static str, message: String, unready: bool) {
        if let Ok(mut c) = self.conditions.lock() {
            c.insert(name, Condition { message, unready });
        }
    }

    /// Clears the condition `name`, if set.
    pub fn clear(&self, name: &'static str) {
        if let Ok(mut c) = self.conditions.lock() {
            c.remove(name);
        }
    }

    /// Every condition now, by name.
    pub fn snapshot(&self) -> BTreeMap<&'static str, Condition> {
        self.conditions.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_are_set_replaced_and_cleared_by_name() {
        let h = Health::new();
        let seen = h.clone();
        h.set_unready("jobs_held", "holding 1");
        h.set_unready("jobs_held", "holding 2");
        h.set_degraded("broker_blocked", "memory alarm");
        assert_eq!(seen.snapshot().len(), 2);
        assert_eq!(seen.snapshot()["jobs_held"].message, "holding 2");
        assert!(seen.snapshot()["jobs_held"].unready);
        assert!(!seen.snapshot()["broker_blocked"].unready);
        h.clear("jobs_held");
        h.clear("nothing");
        assert_eq!(
            seen.snapshot().keys().copied().collect::<Vec<_>>(),
            ["broker_blocked"]
        );
    }
}
