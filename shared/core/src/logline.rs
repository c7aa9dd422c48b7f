//! Log lines emitted by an action's handler.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamType {
    /// Standard output (and built-in handlers' messages).
    Stdout,
    /// Standard error.
    Stderr,
    /// A line written by Stevedore itself (timeouts, retries, cancels).
    System,
}

impl StreamType {
    /// Wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamType::Stdout => "stdout",
            StreamType::Stderr => "stderr",
            StreamType::System => "system",
        }
    }

    /// Parses the wire spelling; unknown values read as stdout.
    pub fn parse(s: &str) -> Self {
        match s {
            "stderr" => StreamType::Stderr,
            "system" => StreamType::System,
            _ => StreamType::Stdout,
        }
    }
}

/// A log line to append (the store numbers it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLogLine {
    /// The text, without its newline.
    pub log: String,
    /// Epoch seconds.
    pub timestamp: i64,
    /// Origin.
    pub stream: StreamType,
}

impl NewLogLine {
    /// A line stamped now.
    pub fn now(stream: StreamType, log: impl Into<String>) -> Self {
        NewLogLine {
            log: log.into(),
            timestamp: chrono::Utc::now().timestamp(),
            stream,
        }
    }
}

/// A stored log line with its per-action sequence number (1, 2, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The action it belongs to.
    pub action_uuid: Uuid,
    /// Per-action sequence number, from 1, without gaps.
    pub seq: i64,
    /// The text.
    pub log: String,
    /// Epoch seconds.
    pub timestamp: i64,
    /// Origin.
    pub stream: StreamType,
}

impl LogLine {
    /// The websocket frame the clients parse: `{"type":"log","log":…,"timestamp":…}`.
    pub fn to_wire(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "log",
            "log": self.log,
            "timestamp": self.timestamp,
            "streamType": self.stream.as_str(),
        })
    }
}
