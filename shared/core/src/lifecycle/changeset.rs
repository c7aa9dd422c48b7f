//! What a change records besides its rows, as one plain value.
//!
//! Every change the engine makes — a submission, a state change, a
//! promotion, a hand-back, an object change — records an event (for the
//! streams), a system log entry (for the QNAP log) and, when work is
//! dispatched, an outbox row (for the relay). The engine collects them, in
//! order, into a [`Changeset`]; the driver writes it in one go
//! ([`super::Driver::write`]) and answers with what the database assigned
//! ([`Written`]).

use super::StoredAction;
use crate::event::{Event, EventKind};
use crate::object::Object;
use crate::syslog::NewSystemLog;
use crate::{Error, Result};
use std::collections::HashMap;
use uuid::Uuid;

/// The time of an event not yet written: the driver stamps the time of
/// its transaction.
pub const UNSTAMPED: chrono::DateTime<chrono::Utc> = chrono::DateTime::UNIX_EPOCH;

/// The events, system log entries and outbox rows of one transaction's
/// changes, in the order they happened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changeset {
    /// Events, numbered by the driver in this order.
    pub events: Vec<Event>,
    /// System log entries.
    pub system_log: Vec<NewSystemLog>,
    /// Actions to publish a job for (an outbox row each).
    pub outbox: Vec<Uuid>,
}

impl Changeset {
    /// Records a change of `action` (its event of `kind` and its system log
    /// entry); with `dispatch`, also its outbox row.
    pub fn action(&mut self, action: &StoredAction, kind: EventKind, dispatch: bool) {
        self.system_log.push(NewSystemLog::for_action(&action.action));
        self.events.push(action.event(kind, UNSTAMPED));
        if dispatch {
            self.outbox.push(action.action.uuid);
        }
    }

    /// Records that `waiting`, still Pending, moved up its object's queue:
    /// its `update` event only (its state did not change, so no system log
    /// entry and nothing to dispatch).
    pub fn queue_moved(&mut self, waiting: &StoredAction) {
        self.events.push(waiting.event(EventKind::Update, UNSTAMPED));
    }

    /// Records a change of `object` (its event of `kind`) and its system log
    /// entry.
    pub fn object(&mut self, object: &Object, kind: EventKind, entry: NewSystemLog) {
        self.system_log.push(entry);
        self.events
            .push(super::object_event(object, kind, chrono::Utc::now()));
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.system_log.is_empty() && self.outbox.is_empty()
    }
}

/// What writing a [`Changeset`] assigned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Written {
    /// The events as stored (`seq`, `datetime`), in the changeset's order.
    pub events: Vec<Event>,
    /// The outbox row of each dispatched action.
    pub outbox: HashMap<Uuid, i64>,
}

impl Written {
    /// Checks that the driver wrote all `(events, outbox rows)` of a changeset (a driver bug or a
    /// database fault otherwise: an internal error, never the client's).
    pub fn check(self, (events, outbox): (usize, usize)) -> Result<Self> {
        if self.events.len() != events || self.outbox.len() != outbox {
            return Err(Error::Internal(format!(
                "{} events stored of {events}, {} outbox rows of {outbox}",
                self.events.len(),
                self.outbox.len(),
            )));
        }
        Ok(self)
    }

    /// The stored events in order, to hand out one by one.
    pub fn into_parts(self) -> (std::vec::IntoIter<Event>, HashMap<Uuid, i64>) {
        (self.events.into_iter(), self.outbox)
    }
}
