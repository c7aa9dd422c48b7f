//! Action progress: what a handler reports while it runs (a percentage and a
//! message), how a worker writes it (coalesced, fenced by the lease) and how
//! it travels to the streams.
//!
//! Progress is *ephemeral*: it is stored on the action row (the action JSON's
//! `progress` and `progress_message`), but it makes no event, takes no `seq`
//! and is never replayed. A client that resumes a stream reads the current
//! progress from the action JSON; live reports reach the events stream as a
//! [`ProgressEvent`] (`"action": "progress"`, no `seq`) and the logs stream
//! as a `{"type":"progress",…}` frame.

use crate::dates;
use crate::lifecycle::StoredAction;
use crate::store::LeaseToken;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest progress message kept, in bytes; a longer one is cut at a
/// character boundary.
pub const MAX_PROGRESS_MESSAGE: usize = 200;

/// One progress report: how far along (0–100) and what it is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Percent done, 0 to 100.
    pub percent: u8,
    /// What the handler is doing (may be empty), at most
    /// [`MAX_PROGRESS_MESSAGE`] bytes.
    pub message: String,
}

impl Progress {
    /// A report, or `None` when `percent` is above 100. The message is
    /// trimmed and cut to [`MAX_PROGRESS_MESSAGE`] bytes.
    pub fn new(percent: u8, message: impl Into<String>) -> Option<Progress> {
        if percent > 100 {
            return None;
        }
        let message = message.into();
        let mut message = message.trim();
        if message.len() > MAX_PROGRESS_MESSAGE {
            let mut end = MAX_PROGRESS_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message = message[..end].trim_end();
        }
        Some(Progress {
            percent,
            message: message.to_string(),
        })
    }
}

/// A progress write of one action: the latest report, fenced by the lease
/// token of the worker that runs it ([`crate::store::ActionStore::record_progress`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressWrite {
    /// The action.
    pub uuid: Uuid,
    /// The lease that must still hold it.
    pub token: LeaseToken,
    /// Its latest report.
    pub progress: Progress,
}

/// A live progress report as the events stream sends it: an action event of
/// the Tutum shape with `"action": "progress"`, the action's current state
/// and parents, and the two progress fields. It has no `seq`: it is not
/// stored as an event, so it is not replayed on `?since=` and does not
/// move a client's resume point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressEvent {
    /// Always `action`.
    #[serde(rename = "type")]
    pub object_type: String,
    /// Always `progress`.
    pub action: String,
    /// The action's uuid.
    pub uuid: Uuid,
    /// The action's resource URI.
    pub resource_uri: String,
    /// The action's state when the report was written.
    pub state: String,
    /// Its object's resource URI, then that object's parents.
    pub parents: Vec<String>,
    /// When the report was written (RFC 2822).
    #[serde(with = "dates::wire")]
    pub datetime: DateTime<Utc>,
    /// Percent done, 0 to 100.
    pub progress: u8,
    /// What the handler is doing.
    pub progress_message: String,
    /// Owning namespace (for tenant filtering, as on events).
    pub namespace: String,
}

impl ProgressEvent {
    /// The report of an action as just written, or `None` if it has no
    /// progress.
    pub fn of(stored: &StoredAction, datetime: DateTime<Utc>) -> Option<ProgressEvent> {
        let a = &stored.action;
        let progress = a.progress?;
        let mut parents = Vec::with_capacity(1 + stored.object_parents.len());
        parents.push(a.object.clone());
        parents.extend(stored.object_parents.iter().cloned());
        Some(ProgressEvent {
            object_type: "action".into(),
            action: "progress".into(),
            uuid: a.uuid,
            resource_uri: crate::action::action_uri(&a.uuid),
            state: a.state.as_str().to_string(),
            parents,
            datetime,
            progress,
            progress_message: a.progress_message.clone(),
            namespace: a.namespace.clone(),
        })
    }

    /// Its frame on an action's logs stream:
    /// `{"type":"progress","progress":…,"progress_message":…,"timestamp":…}`.
    pub fn logs_frame(&self) -> serde_json::Value {
        logs_frame(self.progress, &self.progress_message, self.datetime.timestamp())
    }
}

/// The logs stream's progress frame (also sent first to a client that
/// connects while an action has progress).
pub fn logs_frame(progress: u8, message: &str, timestamp: i64) -> serde_json::Value {
    serde_json::json!({
        "type": "progress",
        "progress": progress,
        "progress_message": message,
        "timestamp": timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_bounded() {
        assert_eq!(Progress::new(101, "x"), None);
        let p = Progress::new(100, "  done \n").unwrap();
        assert_eq!((p.percent, p.message.as_str()), (100, "done"));
        let long = "é".repeat(MAX_PROGRESS_MESSAGE);
        let p = Progress::new(5, long).unwrap();
        assert!(p.message.len() <= MAX_PROGRESS_MESSAGE);
        assert!(p.message.chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_event_has_no_seq_and_the_action_event_shape() {
        let e = ProgressEvent {
            object_type: "action".into(),
            action: "progress".into(),
            uuid: Uuid::nil(),
            resource_uri: "/api/audit/v1/action/x/".into(),
            state: "In progress".into(),
            parents: vec!["/api/app/v1/u/service/y/".into()],
            datetime: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            progress: 42,
            progress_message: "Copying layers".into(),
            namespace: "u".into(),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "action");
        assert_eq!(v["action"], "progress");
        assert_eq!(v["progress"], 42);
        assert_eq!(v["progress_message"], "Copying layers");
        assert!(v.get("seq").is_none());
        assert!(v["datetime"].as_str().unwrap().ends_with("+0000"));
        let f = e.logs_frame();
        assert_eq!(f["type"], "progress");
        assert_eq!(f["timestamp"], 1_700_000_000);
    }
}
