//! Events: every create/update/delete of an action or object, in the shape of
//! the Tutum / Docker Cloud events stream, numbered by a global sequence so a
//! client can resume or poll without gaps.

use crate::dates;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What happened to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The object was created.
    Create,
    /// The object changed (state, attributes).
    Update,
    /// The object was deleted.
    Delete,
}

impl EventKind {
    /// Wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Create => "create",
            EventKind::Update => "update",
            EventKind::Delete => "delete",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "create" => Some(EventKind::Create),
            "update" => Some(EventKind::Update),
            "delete" => Some(EventKind::Delete),
            _ => None,
        }
    }
}

/// An event as stored and as sent on the events stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Object type: `action`, `service`, …
    #[serde(rename = "type")]
    pub object_type: String,
    /// create / update / delete.
    pub action: EventKind,
    /// The object's uuid.
    pub uuid: String,
    /// The object's resource URI.
    pub resource_uri: String,
    /// The object's state after the change.
    pub state: String,
    /// Resource URIs of the object's parents (for an action: its object and
    /// that object's parents).
    pub parents: Vec<String>,
    /// When it happened (RFC 2822).
    #[serde(with = "dates::wire")]
    pub datetime: DateTime<Utc>,
    /// Global, monotonically increasing sequence number (0 before it is stored).
    pub seq: i64,
    /// Owning namespace (used for tenant filtering; not a secret).
    pub namespace: String,
}
