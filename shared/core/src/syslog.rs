//! The system log: a human-readable record of what happened, in the shape of
//! the QNAP Container Station log API (`{category,id,level,message,ts,user}`).
//!
//! Every action state change writes an entry in the same transaction as the
//! change (the stores do it where they record the action's event); object
//! changes, authentication failures and administrative commands write theirs
//! through [`crate::store::Store::append_system_log`].

use crate::action::Action;
use crate::state::ActionState;
use serde::{Deserialize, Serialize};

/// Severity of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    /// Normal operation.
    #[serde(rename = "INFO")]
    Info,
    /// Something a user or operator may want to look at.
    #[serde(rename = "WARN")]
    Warn,
    /// A failure.
    #[serde(rename = "ERROR")]
    Error,
}

impl LogLevel {
    /// Wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARN",
            LogLevel::Error => "ERROR",
        }
    }

    /// Parses `INFO`/`WARN`/`ERROR` (any case; `WARNING` too).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "INFO" => Some(LogLevel::Info),
            "WARN" | "WARNING" => Some(LogLevel::Warn),
            "ERROR" => Some(LogLevel::Error),
            _ => None,
        }
    }
}

/// An entry to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSystemLog {
    /// Namespace whose members may read it (`None`: operators only).
    pub namespace: Option<String>,
    /// Function category: `action`, an object type, `auth`, `admin`.
    pub category: String,
    /// Severity.
    pub level: LogLevel,
    /// Who did it.
    pub user: String,
    /// What happened.
    pub message: String,
}

impl NewSystemLog {
    /// The entry for an action's current state.
    pub fn for_action(a: &Action) -> Self {
        let level = match a.state {
            ActionState::Failed => LogLevel::Error,
            ActionState::Canceled | ActionState::Canceling => LogLevel::Warn,
            _ => LogLevel::Info,
        };
        NewSystemLog {
            namespace: Some(a.namespace.clone()),
            category: "action".into(),
            level,
            user: a.user.clone(),
            message: format!("{} ({}) on {}: {}", a.action, a.uuid, a.object, a.state),
        }
    }
}

/// A stored entry, as `/api/v1/log` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemLogEntry {
    /// Function category.
    pub category: String,
    /// Increasing id.
    pub id: i64,
    /// Severity.
    pub level: LogLevel,
    /// What happened.
    pub message: String,
    /// Epoch seconds.
    pub ts: i64,
    /// Who did it.
    pub user: String,
    /// Epoch microseconds (for the CSV export's fractional seconds).
    #[serde(skip)]
    pub ts_micros: i64,
}

/// Filters of the system log. Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemLogFilter {
    /// `ts >= time_start` (epoch seconds).
    pub time_start: Option<i64>,
    /// `ts <= time_end` (epoch seconds).
    pub time_end: Option<i64>,
    /// Exactly this user.
    pub user: Option<String>,
    /// Exactly this level.
    pub level: Option<LogLevel>,
    /// Exactly this category.
    pub category: Option<String>,
    /// Message contains this text (case-insensitive).
    pub text: Option<String>,
    /// Only entries with `id < before_id` (keyset paging for exports).
    pub before_id: Option<i64>,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// System log entries.
    pub system_log: u64,
    /// Finished actions (with their log lines).
    pub actions: u64,
    /// Events.
    pub events: u64,
    /// Expired sessions.
    pub sessions: u64,
}
