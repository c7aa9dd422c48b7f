//! Messages carried by the broker.
//!
//! **Invariant:** the database is the source of truth; a message only says
//! "look at the database". Any message may be delivered twice, so every
//! consumer is idempotent.

use crate::event::Event;
use crate::logline::LogLine;
use crate::progress::ProgressEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most actions one job message carries.
pub const MAX_JOB_BATCH: usize = 64;

/// A job on the jobs queue: run these actions (one message per group of
/// actions committed together, at most [`MAX_JOB_BATCH`]).
///
/// On the wire: `{"actions": ["<uuid>", …]}`. A single `{"action": "<uuid>"}`
/// (the format before batches) is still read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "JobWire")]
pub struct JobMessage {
    /// The actions to run, in the order they were committed.
    pub actions: Vec<Uuid>,
}

#[derive(Deserialize)]
struct JobWire {
    #[serde(default)]
    actions: Vec<Uuid>,
    #[serde(default)]
    action: Option<Uuid>,
}

impl From<JobWire> for JobMessage {
    fn from(w: JobWire) -> Self {
        let mut actions = w.actions;
        if let Some(a) = w.action {
            actions.insert(0, a);
        }
        JobMessage { actions }
    }
}

impl JobMessage {
    /// A job for one action.
    pub fn one(action: Uuid) -> Self {
        JobMessage {
            actions: vec![action],
        }
    }

    /// The jobs for `actions`, [`MAX_JOB_BATCH`] to a message.
    pub fn batches(actions: &[Uuid]) -> Vec<JobMessage> {
        actions
            .chunks(MAX_JOB_BATCH)
            .map(|c| JobMessage { actions: c.to_vec() })
            .collect()
    }
}

/// An update on the updates exchange, for stream instances and waiters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Update {
    /// An event was stored.
    Event(Event),
    /// Events stored together (one transaction's), in `seq` order.
    Events {
        /// The events.
        events: Vec<Event>,
    },
    /// Log lines were stored for an action.
    Logs {
        /// Owning namespace.
        namespace: String,
        /// The lines, in order.
        lines: Vec<LogLine>,
    },
    /// Progress reports just written (ephemeral: no `seq`, never replayed;
    /// [`crate::progress`]).
    Progress {
        /// The reports, one per action.
        reports: Vec<ProgressEvent>,
    },
}

impl Update {
    /// The events this update carries (none for log lines).
    pub fn events(&self) -> &[Event] {
        match self {
            Update::Event(e) => std::slice::from_ref(e),
            Update::Events { events } => events,
            Update::Logs { .. } | Update::Progress { .. } => &[],
        }
    }

    /// The events it carries, owned (none for log lines).
    pub fn into_events(self) -> Vec<Event> {
        match self {
            Update::Event(e) => vec![e],
            Update::Events { events } => events,
            Update::Logs { .. } | Update::Progress { .. } => Vec::new(),
        }
    }

    /// The routing key on the topic exchange: `event.<namespace>.<type>`,
    /// `events.<namespace>` (or `events` when a batch spans namespaces),
    /// `logs.<namespace>.<action uuid>`, or `progress.<namespace>` (or
    /// `progress`).
    pub fn routing_key(&self) -> String {
        match self {
            Update::Event(e) => format!("event.{}.{}", e.namespace, e.object_type),
            Update::Events { events } => match events.first() {
                Some(e) if events.iter().all(|o| o.namespace == e.namespace) => {
                    format!("events.{}", e.namespace)
                }
                _ => "events".to_string(),
            },
            Update::Logs { namespace, lines } => format!(
                "logs.{}.{}",
                namespace,
                lines
                    .first()
                    .map(|l| l.action_uuid.to_string())
                    .unwrap_or_default()
            ),
            Update::Progress { reports } => match reports.first() {
                Some(r) if reports.iter().all(|o| o.namespace == r.namespace) => {
                    format!("progress.{}", r.namespace)
                }
                _ => "progress".to_string(),
            },
        }
    }
}

/// A control message on the fanout exchange, seen by every worker and
/// every API and stream process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Control {
    /// Cancel this action if you are running it (workers).
    Cancel {
        /// The action.
        action: Uuid,
    },
    /// A key or session of this user ended: forget every credential and
    /// session of theirs you verified (API and stream processes).
    Revoke {
        /// The user name.
        user: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_message_is_a_list_and_the_single_form_still_reads() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let m = JobMessage { actions: vec![a, b] };
        let wire = serde_json::to_string(&m).unwrap();
        assert_eq!(wire, format!(r#"{{"actions":["{a}","{b}"]}}"#));
        assert_eq!(serde_json::from_str::<JobMessage>(&wire).unwrap(), m);
        let old: JobMessage = serde_json::from_str(&format!(r#"{{"action":"{a}"}}"#)).unwrap();
        assert_eq!(old, JobMessage::one(a));
        assert!(serde_json::from_str::<JobMessage>(r#"{"action":"nope"}"#).is_err());
    }

    #[test]
    fn control_messages_are_tagged_by_kind() {
        let wire = serde_json::to_string(&Control::Revoke { user: "ann".into() }).unwrap();
        assert_eq!(wire, r#"{"kind":"revoke","user":"ann"}"#);
        let a = Uuid::new_v4();
        let cancel: Control =
            serde_json::from_str(&format!(r#"{{"kind":"cancel","action":"{a}"}}"#)).unwrap();
        assert_eq!(cancel, Control::Cancel { action: a });
    }

    #[test]
    fn batches_hold_at_most_the_limit_in_order() {
        let ids: Vec<Uuid> = (0..MAX_JOB_BATCH * 2 + 1).map(|_| Uuid::new_v4()).collect();
        let jobs = JobMessage::batches(&ids);
        assert_eq!(jobs.len(), 3);
        assert!(jobs.iter().all(|j| j.actions.len() <= MAX_JOB_BATCH));
        let flat: Vec<Uuid> = jobs.into_iter().flat_map(|j| j.actions).collect();
        assert_eq!(flat, ids);
        assert!(JobMessage::batches(&[]).is_empty());
    }
}
