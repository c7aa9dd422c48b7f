//! Puts the live events the hub receives back in `seq` order, and notices
//! the ones that never come.
//!
//! The store numbers events in commit order (PostgreSQL's events lock,
//! SQLite's one writer), but every process publishes its own commits'
//! events, best effort: two processes' updates may arrive crossed, and an
//! update published on a connection that breaks (a RabbitMQ node stopping)
//! is lost. A client resumes with `?since=` the highest `seq` it saw, so a
//! lower event it was sent later, or never, would be skipped for good.
//!
//! The sequencer releases events only in order: an event whose predecessor
//! has not arrived is held until it does, or for at most the hold time.
//! When the hold runs out, the hub sends every client a gap notice before
//! releasing what it held: each client then replays from the store after
//! the highest `seq` it sent, and the store holds the missing events (they
//! were committed before the held ones). A hole that is no event (a
//! sequence number a rolled-back transaction drew) costs the same notice.
//! After each (re)subscription the first events are held once, since the
//! sequencer cannot know what came before them.

use std::collections::BTreeMap;
use std::time::Duration;
use stevedore_core::event::Event;
use tokio::time::Instant;

/// How long an event waits for the events before it.
pub const HOLD: Duration = Duration::from_millis(250);

/// What [`Sequencer::expire`] releases.
#[derive(Debug, Default, PartialEq)]
pub struct Expired {
    /// Whether clients must catch up from the store first (always, when
    /// anything is released by expiry: something before it never came).
    pub gap: bool,
    /// The events held, in order.
    pub events: Vec<Event>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Sequencer {
    /// The highest `seq` released; none since the (re)subscription.
    released: Option<i64>,
    /// Events waiting for their predecessors, with when each arrived.
    held: BTreeMap<i64, (Event, Instant)>,
    hold: Duration,
}

impl Sequencer {
    /// An empty sequencer that holds events up to `hold`.
    pub fn new(hold: Duration) -> Self {
        Sequencer {
            released: None,
            held: BTreeMap::new(),
            hold,
        }
    }

    /// Takes one arrived event; returns the events now released, in order.
    /// An event at or below what was already released (late, after its
    /// successors' hold ran out) is released at once: the gap notice of
    /// that expiry already sent it to every client from the store, and a
    /// socket drops what it sent.
    pub fn push(&mut self, event: Event, now: Instant) -> Vec<Event> {
        let seq = event.seq;
        let Some(released) = self.released else {
            self.held.entry(seq).or_insert((event, now));
            return Vec::new();
        };
        if seq <= released {
            return vec![event];
        }
        self.held.entry(seq).or_insert((event, now));
        self.release_in_order()
    }

    fn release_in_order(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(entry) = self.held.first_entry() {
            let next = self.released.map(|r| r + 1);
            if Some(*entry.key()) != next {
                break;
            }
            self.released = Some(*entry.key());
            out.push(entry.remove().0);
        }
        out
    }

    /// When the longest-held event's hold runs out, if any is held.
    pub fn deadline(&self) -> Option<Instant> {
        self.held
            .values()
            .map(|(_, at)| *at)
            .min()
            .map(|at| at + self.hold)
    }

    /// Releases everything held once the longest-held event waited its
    /// hold out (with a gap notice); nothing before that.
    pub fn expire(&mut self, now: Instant) -> Expired {
        match self.deadline() {
            Some(deadline) if deadline <= now => {}
            _ => return Expired::default(),
        }
        let held = std::mem::take(&mut self.held);
        let events: Vec<Event> = held.into_values().map(|(e, _)| e).collect();
        if let Some(last) = events.last() {
            self.released = Some(self.released.map_or(last.seq, |r| r.max(last.seq)));
        }
        Expired { gap: true, events }
    }

    /// Everything held, in order, and a fresh start (the subscription
    /// ended). Something before them may be missing: the caller sends a gap
    /// notice first.
    pub fn drain(&mut self) -> Vec<Event> {
        self.released = None;
        std::mem::take(&mut self.held)
            .into_values()
            .map(|(e, _)| e)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64) -> Event {
        Event {
            object_type: "action".into(),
            action: stevedore_core::event::EventKind::Update,
            uuid: "u".into(),
            resource_uri: "/api/audit/v1/action/u/".into(),
            state: "Success".into(),
            parents: vec![],
            datetime: chrono::Utc::now(),
            seq,
            namespace: "ns".into(),
        }
    }

    fn seqs(events: &[Event]) -> Vec<i64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn the_first_events_wait_once_then_arrive_in_order() {
        let t0 = Instant::now();
        let mut s = Sequencer::new(HOLD);
        assert!(s.push(event(11), t0).is_empty());
        assert!(s.push(event(10), t0 + Duration::from_millis(5)).is_empty());
        assert_eq!(s.deadline(), Some(t0 + HOLD));
        assert_eq!(s.expire(t0 + HOLD - Duration::from_millis(1)), Expired::default());
        let out = s.expire(t0 + HOLD);
        assert!(out.gap, "what came before the first events is in the store");
        assert_eq!(seqs(&out.events), [10, 11]);
        assert_eq!(s.deadline(), None);
        // From now on, in-order events pass at once.
        assert_eq!(seqs(&s.push(event(12), t0 + HOLD)), [12]);
    }

    #[test]
    fn crossed_events_are_put_back_in_order_without_a_gap() {
        let t0 = Instant::now();
        let mut s = Sequencer::new(HOLD);
        s.push(event(1), t0);
        s.expire(t0 + HOLD);
        let t = t0 + HOLD;
        assert!(s.push(event(3), t).is_empty(), "2 has not come yet");
        assert!(s.push(event(4), t).is_empty());
        assert_eq!(seqs(&s.push(event(2), t + Duration::from_millis(3))), [2, 3, 4]);
        assert_eq!(s.deadline(), None);
        assert_eq!(s.expire(t + HOLD * 2), Expired::default());
    }

    #[test]
    fn a_missing_event_costs_a_gap_notice_after_the_hold() {
        let t0 = Instant::now();
        let mut s = Sequencer::new(HOLD);
        s.push(event(1), t0);
        s.expire(t0 + HOLD);
        let t = t0 + HOLD;
        assert!(s.push(event(3), t).is_empty());
        assert!(s.push(event(5), t + Duration::from_millis(100)).is_empty());
        assert_eq!(s.deadline(), Some(t + HOLD), "the longest-held event decides");
        let out = s.expire(t + HOLD);
        assert!(out.gap);
        assert_eq!(seqs(&out.events), [3, 5]);
        // 2 comes late after all: passed on (the store replay sent it already,
        // and a socket drops what it sent); 4 likewise.
        assert_eq!(seqs(&s.push(event(2), t + HOLD * 2)), [2]);
        assert_eq!(seqs(&s.push(event(4), t + HOLD * 2)), [4]);
        assert_eq!(seqs(&s.push(event(6), t + HOLD * 2)), [6]);
    }

    #[test]
    fn a_repeated_event_is_held_once_and_drain_starts_over() {
        let t0 = Instant::now();
        let mut s = Sequencer::new(HOLD);
        s.push(event(7), t0);
        s.push(event(7), t0);
        assert_eq!(seqs(&s.drain()), [7]);
        assert!(
            s.push(event(8), t0).is_empty(),
            "after a drain the first events wait again"
        );
    }
}
