//! `GET /api/audit/v1/[<ns>/]events[/]` and `/v1/events[/]` (websocket, or
//! Server-Sent Events with `Accept: text/event-stream`).
//!
//! After the handshake the server sends
//! `{"type":"auth","data":{"user":…,"namespaces":[…],"seq":<n>}}`, then every
//! event of the caller's namespaces (or of the one namespace in the path) as
//! the event JSON, which carries its global sequence number `seq`.
//!
//! Resume: `?since=<seq>` (or an event stream's `Last-Event-ID`) replays the
//! stored events after `seq` before going live; without it the stream starts
//! at the `seq` given in the auth frame. An event stream's `id` is that point:
//! the auth frame's `seq`, then the highest `seq` sent.
//! The socket registers with the hub before it reads the store, and drops
//! live events it already sent, so the hand-over loses and doubles nothing.
//! Whenever the hub may have missed updates it replays from the store again.
//! The socket stays open until the client or the process goes away.
//!
//! Live progress reports of actions ([`stevedore_core::progress`]) are sent
//! as they come, as action events with `"action": "progress"` and no `seq`:
//! they are not replayed, and a client resumes from the last `seq` it saw.
//!
//! Live events go out in batches: the socket takes what its queue holds
//! (up to [`MAX_BATCH`]), writes each new frame into its write buffer and
//! flushes once. Clients see the same frames in the same order.

use super::transport::{Handshake, StreamClient, Transport};
use super::{
    authenticate_handshake, namespaces_for, overflow_message, resume_point, Delivery, Next, Stop,
    StreamState, Subscription, MAX_BATCH,
};
use crate::client_addr::ClientAddr;
use crate::error::ApiError;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::HashMap;
use stevedore_core::store::Scope;

/// Events read from the store per replay query.
const REPLAY_PAGE: i64 = 1000;
/// How many sequence numbers below the newest one sent a socket remembers
/// (one bit each) to drop duplicates and late arrivals it already replayed;
/// anything older counts as sent.
const WINDOW: i64 = 4096;
const WINDOW_WORDS: usize = WINDOW as usize / 64;

/// The handler without a namespace segment.
pub async fn handler(
    State(s): State<StreamState>,
    Query(q): Query<HashMap<String, String>>,
    addr: ClientAddr,
    headers: HeaderMap,
    handshake: Handshake,
) -> Response {
    handle(s, None, q, addr, headers, handshake).await
}

/// The handler with a namespace segment.
pub async fn handler_ns(
    State(s): State<StreamState>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    addr: ClientAddr,
    headers: HeaderMap,
    handshake: Handshake,
) -> Response {
    handle(s, Some(ns), q, addr, headers, handshake).await
}

async fn handle(
    s: StreamState,
    ns: Option<String>,
    q: HashMap<String, String>,
    addr: ClientAddr,
    headers: HeaderMap,
    handshake: Handshake,
) -> Response {
    let prepared = async {
        let caller = authenticate_handshake(&s.api, &headers, &q, addr).await?;
        let namespaces = namespaces_for(&caller, ns.as_deref())?;
        let since = resume_point(&headers, &q)?;
        let slot = s.api.websockets.acquire(&caller.user)?;
        Ok::<_, ApiError>((caller.user, namespaces, since, slot))
    }
    .await;
    match prepared {
        Err(e) => e.into_response(),
        Ok((user, namespaces, since, slot)) => handshake.serve(
            slot,
            EventsClient {
                s,
                user,
                namespaces,
                since,
            },
        ),
    }
}

/// One events client, checked and ready to run.
struct EventsClient {
    s: StreamState,
    user: String,
    namespaces: Vec<String>,
    since: Option<i64>,
}

impl StreamClient for EventsClient {
    async fn run<T: Transport>(self, transport: &mut T) -> Stop {
        stream_events(transport, &self.s, self.user, self.namespaces, self.since).await
    }
}

/// Which sequence numbers a socket has sent: everything at or below a
/// floor, and one bit for each of the [`WINDOW`] numbers above it (512
/// bytes, allocated with the first event sent). Sending a number past the
/// window moves the floor up to [`WINDOW`] below it.
#[derive(Debug)]
pub(crate) struct Cursor {
    /// Everything at or below it counts as sent (or not wanted).
    floor: i64,
    /// The highest sequence number sent (or the starting point).
    max: i64,
    /// Bit `seq mod WINDOW` tells whether `seq` in `floor + 1 ..= floor +
    /// WINDOW` was sent (a ring: moving the floor clears the bits it passes).
    sent: Box<[u64]>,
}

impl Cursor {
    pub(crate) fn new(start: i64) -> Self {
        Cursor {
            floor: start,
            max: start,
            sent: Box::default(),
        }
    }

    /// Whether `seq` is new; records it.
    pub(crate) fn accept(&mut self, seq: i64) -> bool {
        if seq <= self.floor {
            return false;
        }
        if seq - self.floor > WINDOW {
            self.raise_floor(seq - WINDOW);
        }
        if self.sent.is_empty() {
            self.sent = vec![0; WINDOW_WORDS].into_boxed_slice();
        }
        let (word, bit) = Self::slot(seq);
        if self.sent[word] & bit != 0 {
            return false;
        }
        self.sent[word] |= bit;
        self.max = self.max.max(seq);
        true
    }

    fn slot(seq: i64) -> (usize, u64) {
        let i = seq.rem_euclid(WINDOW) as usize;
        (i / 64, 1 << (i % 64))
    }

    /// Counts everything up to `floor` as sent and forgets those bits.
    fn raise_floor(&mut self, floor: i64) {
        if floor - self.floor >= WINDOW {
            self.sent.fill(0);
        } else if !self.sent.is_empty() {
            for seq in self.floor + 1..=floor {
                let (word, bit) = Self::slot(seq);
                self.sent[word] &= !bit;
            }
        }
        self.floor = floor;
    }
}

async fn stream_events<T: Transport>(
    socket: &mut T,
    s: &StreamState,
    user: String,
    namespaces: Vec<String>,
    since: Option<i64>,
) -> Stop {
    let mut sub = s.hub.subscribe_events(&namespaces);
    let store = s.api.dispatcher.store().clone();
    let start = match since {
        Some(seq) => seq,
        None => match store.last_event_seq().await {
            Ok(seq) => seq,
            Err(e) => return read_failed(e),
        },
    };
    let auth = json!({
        "type": "auth",
        "data": {"user": user, "namespaces": namespaces, "seq": start},
    });
    if let Err(stop) = socket.send(Some(start), auth.to_string().into()).await {
        return stop;
    }
    let mut cursor = Cursor::new(start);
    if since.is_some() {
        if let Err(stop) = replay(socket, s, &namespaces, &mut cursor).await {
            return stop;
        }
    }
    // One wait on the shared shutdown signal for the socket's life (a new one
    // per message would register with its waiter list, under its lock, every
    // time), polled only when nothing is queued: on shutdown the hub stops
    // too, so a busy socket gets there after what it has queued.
    let shutdown = s.shutdown.cancelled();
    tokio::pin!(shutdown);
    loop {
        let first = tokio::select! {
            biased;
            _ = socket.gone() => return Stop::Gone,
            n = sub.next() => n,
            _ = &mut shutdown => return Stop::Shutdown,
        };
        if let Err(stop) = send_batch(socket, s, &namespaces, &mut sub, &mut cursor, first).await {
            return stop;
        }
    }
}

/// Sends `first` and what else the queue holds (up to [`MAX_BATCH`]
/// deliveries): the new events' shared frames go into the write buffer,
/// then one flush.
async fn send_batch<T: Transport>(
    socket: &mut T,
    s: &StreamState,
    namespaces: &[String],
    sub: &mut Subscription,
    cursor: &mut Cursor,
    first: Next,
) -> Result<(), Stop> {
    let mut next = Some(first);
    let mut taken = 0;
    while let Some(n) = next.take() {
        match n {
            // What was fed goes out before the error frame.
            Next::Overflowed => {
                return Err(Stop::Error(format!(
                    "{}; reconnect with ?since={} to resume",
                    overflow_message("event"),
                    cursor.max
                )))
            }
            Next::Delivery(Delivery::Event(e)) => {
                if cursor.accept(e.event.seq) {
                    socket.feed(Some(cursor.max), e.frame.clone()).await?;
                }
            }
            Next::Delivery(Delivery::Gap) => replay(socket, s, namespaces, cursor).await?,
            Next::Delivery(Delivery::Logs(_)) => {}
            // Ephemeral: no `seq`, so the cursor neither filters nor moves.
            Next::Delivery(Delivery::Progress(p)) => socket.feed(None, p.frame.clone()).await?,
        }
        taken += 1;
        if taken < MAX_BATCH {
            next = sub.try_next();
        }
    }
    socket.flush().await
}

/// Sends the stored events after the cursor's highest sequence number.
async fn replay<T: Transport>(
    socket: &mut T,
    s: &StreamState,
    namespaces: &[String],
    cursor: &mut Cursor,
) -> Result<(), Stop> {
    let store = s.api.dispatcher.store();
    loop {
        let page = store
            .events_after(Scope::Namespaces(namespaces), cursor.max, REPLAY_PAGE)
            .await
            .map_err(read_failed)?;
        let full = page.len() as i64 == REPLAY_PAGE;
        for e in page {
            if cursor.accept(e.seq) {
                let frame = serde_json::to_string(&e).unwrap_or_default();
                socket.feed(Some(cursor.max), frame.into()).await?;
            }
        }
        socket.flush().await?;
        if !full {
            return Ok(());
        }
    }
}

fn read_failed(e: stevedore_core::Error) -> Stop {
    tracing::warn!(error = %e, "events stream cannot read the store");
    Stop::Error("cannot read events; reconnect later with ?since=<last seq seen>".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_drops_what_was_sent_and_what_came_before() {
        let mut c = Cursor::new(10);
        assert!(c.sent.is_empty(), "nothing allocated before the first event");
        assert!(!c.accept(10));
        assert!(!c.accept(3));
        assert!(c.accept(12));
        assert!(c.accept(11), "a late, lower event is still new");
        assert!(!c.accept(12));
        assert_eq!(c.max, 12);
        for seq in 13..(13 + WINDOW + 5) {
            assert!(c.accept(seq));
        }
        assert!(!c.accept(12));
        assert_eq!(c.sent.len(), WINDOW_WORDS, "the window never grows");
    }

    #[test]
    fn the_cursor_window_follows_sparse_and_jumping_numbers() {
        let mut c = Cursor::new(0);
        // Sparse numbers (another namespace's events in between) and a late one.
        for seq in [5, 9, 200, 7, 4000] {
            assert!(c.accept(seq), "{seq}");
        }
        assert!(!c.accept(9) && !c.accept(7) && !c.accept(4000));
        // A jump within reach keeps what is still in the window...
        assert!(c.accept(WINDOW + 150));
        assert!(!c.accept(200), "sent, and still in the window");
        assert!(c.accept(201), "never sent, still in the window");
        assert!(!c.accept(9), "below the window now: counts as sent");
        // ...and a long one forgets all of it.
        assert!(c.accept(1_000_000));
        assert!(!c.accept(1_000_000 - WINDOW));
        assert!(c.accept(1_000_000 - WINDOW + 1));
        assert!(!c.accept(WINDOW + 150));
        assert_eq!(c.max, 1_000_000);
    }

    /// The bitset against the plain model it replaces: a set of what was
    /// sent, everything more than WINDOW below the newest counting as sent.
    #[test]
    fn the_cursor_matches_a_set_with_a_moving_floor() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut rand = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for round in 0..20 {
            let start = rand(1000) as i64;
            let mut c = Cursor::new(start);
            let (mut floor, mut sent) = (start, std::collections::BTreeSet::new());
            let mut head = start;
            for _ in 0..20_000 {
                // Mostly forward, sometimes late or repeated, now and then a leap.
                let seq = match rand(100) {
                    0 => head + rand(3 * WINDOW as u64) as i64,
                    1..=20 => head - rand(WINDOW as u64 + 50) as i64,
                    _ => head + rand(4) as i64,
                };
                let want = if seq <= floor || sent.contains(&seq) {
                    false
                } else {
                    if seq - floor > WINDOW {
                        floor = seq - WINDOW;
                        sent.retain(|&s| s > floor);
                    }
                    sent.insert(seq);
                    true
                };
                assert_eq!(c.accept(seq), want, "round {round}, seq {seq}");
                head = head.max(seq);
            }
            assert_eq!(c.floor, floor);
            assert_eq!(c.max, sent.iter().copied().max().unwrap_or(start).max(start));
        }
    }
}
