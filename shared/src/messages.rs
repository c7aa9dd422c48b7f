//! Messages carried by the broker.
//!
//! **Invariant:** the database is the source of truth; a message only says
//! "look at the database". Any message may be delivered twice, so every
//! consumer is idempotent.

use crate::event::Event;
use crate::logline::LogLine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A job on the jobs queue: run this action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMessage {
    /// The action to run.
    pub action: Uuid,
}

/// An update on the updates exchange, for stream instances and waiters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Update {
    /// An event was stored.
    Event(Event),
    /// Log lines were stored for an action.
    Logs {
        /// Owning namespace.
        namespace: String,
        /// The lines, in order.
        lines: Vec<LogLine>,
    },
}

impl Update {
    /// The routing key on the topic exchange: `event.<namespace>.<type>` or
    /// `logs.<namespace>.<action uuid>`.
    pub fn routing_key(&self) -> String {
        match self {
            Update::Event(e) => format!("event.{}.{}", e.namespace, e.object_type),
            Update::Logs { namespace, lines } => format!(
                "logs.{}.{}",
                namespace,
                lines
                    .first()
                    .map(|l| l.action_uuid.to_string())
                    .unwrap_or_default()
            ),
        }
    }
}

/// A control message on the fanout exchange, seen by every worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Control {
    /// Cancel this action if you are running it.
    Cancel {
        /// The action.
        action: Uuid,
    },
}
