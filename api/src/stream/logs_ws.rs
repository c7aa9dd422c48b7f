//! `GET /api/audit/v1/[<ns>/]action/<uuid>/logs/` and `/v1/action/<uuid>/logs/`
//! (websocket, or Server-Sent Events with `Accept: text/event-stream`;
//! `tail`, default 300; `follow`, default true).
//!
//! The socket first registers with the hub, then reads the action's state and
//! the last `tail` stored lines, and sends them. With `follow` (and the action
//! not yet final) it then forwards live lines, skipping any whose per-action
//! sequence number was already sent and filling any hole from the store, so
//! no line is lost or doubled. When the action's final event arrives, the
//! lines not yet sent are read from the store (a worker stores every line
//! before it writes the final state), then the server closes the socket.
//!
//! Progress: a following socket of a running action that has progress first
//! gets its current report, then every live one, as
//! `{"type":"progress","progress":…,"progress_message":…,"timestamp":…}`
//! frames (never stored as lines, so they take no line number).
//!
//! Resume: each line's number is an event stream's `id`; `Last-Event-ID: n`
//! (or `?since=n`) sends the lines after `n` instead of the `tail`. An event
//! stream that would end at once with nothing to send (the action is final,
//! or `follow=false`, and no line is past the start) is answered `204 No
//! Content`, which tells an `EventSource` not to reconnect.

use super::transport::{Handshake, StreamClient, Transport};
use super::{
    authenticate_handshake, namespaces_for, overflow_message, resume_point, Delivery, Next, Stop, StreamState,
};
use crate::client_addr::ClientAddr;
use crate::error::ApiError;
use crate::input::integer;
use crate::routes::parse_uuid;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::str::FromStr;
use stevedore_core::action::Action;
use stevedore_core::state::ActionState;
use stevedore_core::store::{DynStore, Scope};
use uuid::Uuid;

/// Lines sent before following when the client gives no `tail`.
pub const DEFAULT_TAIL: i64 = 300;

/// Lines read from the store at a time (the backlog and every catch-up), so
/// a socket holds at most this many lines of 64 KiB whatever its `tail`.
const LOG_PAGE: i64 = 64;

/// The handler without a namespace segment.
pub async fn handler(
    State(s): State<StreamState>,
    Path(uuid): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    addr: ClientAddr,
    headers: HeaderMap,
    handshake: Handshake,
) -> Response {
    handle(s, None, uuid, q, addr, headers, handshake).await
}

/// The handler with a namespace segment.
pub async fn handler_ns(
    State(s): State<StreamState>,
    Path((ns, uuid)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    addr: ClientAddr,
    headers: HeaderMap,
    handshake: Handshake,
) -> Response {
    handle(s, Some(ns), uuid, q, addr, headers, handshake).await
}

async fn handle(
    s: StreamState,
    ns: Option<String>,
    uuid: String,
    q: HashMap<String, String>,
    addr: ClientAddr,
    headers: HeaderMap,
    handshake: Handshake,
) -> Response {
    let prepared = match prepare(&s, ns, &uuid, &q, addr, &headers).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if handshake.is_event_stream() {
        match prepared.nothing_to_send(&s).await {
            Ok(true) => return StatusCode::NO_CONTENT.into_response(),
            Ok(false) => {}
            Err(e) => return e.into_response(),
        }
    }
    let slot = match s.api.websockets.acquire(&prepared.user) {
        Ok(slot) => slot,
        Err(e) => return e.into_response(),
    };
    handshake.serve(slot, LogsClient { s, prepared })
}

/// Where a logs stream starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// The last `n` stored lines.
    Tail(i64),
    /// The lines after this number (a resume).
    After(i64),
}

/// A logs request, checked.
struct Prepared {
    user: String,
    uuid: Uuid,
    start: Start,
    follow: bool,
    /// Whether the action was final when the request came.
    finished: bool,
}

impl Prepared {
    /// Whether the stream would end at once without a line: the action is
    /// final (or the client does not follow) and no stored line is past
    /// the start.
    async fn nothing_to_send(&self, s: &StreamState) -> Result<bool, ApiError> {
        if self.follow && !self.finished {
            return Ok(false);
        }
        Ok(match self.start {
            Start::Tail(0) => true,
            Start::Tail(_) => newest_line(s.api.dispatcher.store(), self.uuid).await? == 0,
            Start::After(after) => newest_line(s.api.dispatcher.store(), self.uuid).await? <= after,
        })
    }
}

/// The number of the action's newest stored line (lines are numbered from 1
/// without gaps), 0 for none.
async fn newest_line(store: &DynStore, uuid: Uuid) -> Result<i64, stevedore_core::Error> {
    Ok(store.logs(uuid, Some(1)).await?.last().map_or(0, |l| l.seq))
}

/// Checks credentials, the action's visibility and the query before
/// upgrading. A `tail` above `[http] max_log_tail` is read as that maximum.
async fn prepare(
    s: &StreamState,
    ns: Option<String>,
    uuid: &str,
    q: &HashMap<String, String>,
    addr: ClientAddr,
    headers: &HeaderMap,
) -> Result<Prepared, ApiError> {
    let caller = authenticate_handshake(&s.api, headers, q, addr).await?;
    let uuid = parse_uuid(uuid)?;
    let namespaces = namespaces_for(&caller, ns.as_deref())?;
    let action = s
        .api
        .dispatcher
        .store()
        .get_action(Scope::Namespaces(&namespaces), uuid)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("action {uuid} not found")))?;
    let tail = match q.get("tail").map(|t| t.trim()) {
        None | Some("") => DEFAULT_TAIL,
        Some(t) => integer("tail", t, 0..=i64::MAX)?,
    };
    let follow = match q.get("follow").map(|f| f.to_ascii_lowercase()) {
        None => true,
        Some(f) => match f.as_str() {
            "" | "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "follow must be true or false, not {f:?}"
                )))
            }
        },
    };
    let start = match resume_point(headers, q)? {
        Some(after) => Start::After(after),
        None => Start::Tail(tail.min(s.api.limits.max_log_tail)),
    };
    Ok(Prepared {
        user: caller.user,
        uuid: action.uuid,
        start,
        follow,
        finished: action.state.is_final(),
    })
}

/// One logs client, checked and ready to run.
struct LogsClient {
    s: StreamState,
    prepared: Prepared,
}

impl StreamClient for LogsClient {
    async fn run<T: Transport>(self, transport: &mut T) -> Stop {
        let p = &self.prepared;
        stream_logs(transport, &self.s, p.uuid, p.start, p.follow).await
    }
}

async fn stream_logs<T: Transport>(
    socket: &mut T,
    s: &StreamState,
    uuid: Uuid,
    start: Start,
    follow: bool,
) -> Stop {
    // Register first: a line stored from now on reaches us live, one stored
    // before is in the tail we read next.
    let mut sub = follow.then(|| s.hub.subscribe_logs(uuid));
    let store = s.api.dispatcher.store().clone();
    let action = match current_action(&store, uuid).await {
        Ok(a) => a,
        Err(stop) => return stop,
    };
    let finished = action.state.is_final();
    // Lines are numbered from 1 without gaps: the newest tells where the
    // last `tail` start, and they are read a page at a time.
    let newest = match newest_line(&store, uuid).await {
        Ok(seq) => seq,
        Err(e) => return read_failed(e),
    };
    let mut last = match start {
        Start::Tail(tail) => (newest - tail).max(0),
        Start::After(after) => after,
    };
    if let Err(stop) = catch_up(socket, &store, uuid, &mut last, Some(newest)).await {
        return stop;
    }
    last = last.max(newest);
    let Some(sub) = sub.as_mut() else {
        return Stop::Done;
    };
    if finished {
        return Stop::Done;
    }
    if let Err(stop) = send_current_progress(socket, &action).await {
        return stop;
    }
    loop {
        tokio::select! {
            _ = s.shutdown.cancelled() => return Stop::Shutdown,
            _ = socket.gone() => return Stop::Gone,
            n = sub.next() => match n {
                Next::Overflowed => return Stop::Error(overflow_message("log")),
                Next::Delivery(Delivery::Logs(lines)) => {
                    for line in lines.iter() {
                        if line.seq <= last {
                            continue;
                        }
                        if line.seq > last + 1 {
                            // A batch we never saw (a lost publish): fill the hole.
                            if let Err(stop) = catch_up(socket, &store, uuid, &mut last, Some(line.seq - 1)).await {
                                return stop;
                            }
                        }
                        if let Err(stop) = socket.feed(Some(line.seq), line.to_wire().to_string().into()).await {
                            return stop;
                        }
                        last = line.seq;
                    }
                    if let Err(stop) = socket.flush().await {
                        return stop;
                    }
                }
                Next::Delivery(Delivery::Event(e)) => {
                    let state = ActionState::from_str(&e.event.state).ok();
                    if state.is_some_and(|st| st.is_final()) {
                        return match catch_up(socket, &store, uuid, &mut last, None).await {
                            Ok(()) => Stop::Done,
                            Err(stop) => stop,
                        };
                    }
                }
                Next::Delivery(Delivery::Progress(p)) => {
                    // No line number: an event stream's resume point stays.
                    if let Err(stop) = socket.send(None, p.logs_frame.clone()).await {
                        return stop;
                    }
                }
                Next::Delivery(Delivery::Gap) => {
                    let finished = match action_finished(&store, uuid).await {
                        Ok(f) => f,
                        Err(stop) => return stop,
                    };
                    if let Err(stop) = catch_up(socket, &store, uuid, &mut last, None).await {
                        return stop;
                    }
                    if finished {
                        return Stop::Done;
                    }
                }
            },
        }
    }
}

async fn action_finished(store: &DynStore, uuid: Uuid) -> Result<bool, Stop> {
    Ok(current_action(store, uuid).await?.state.is_final())
}

async fn current_action(store: &DynStore, uuid: Uuid) -> Result<Action, Stop> {
    match store.get_action(Scope::All, uuid).await {
        Ok(Some(a)) => Ok(a),
        Ok(None) => Err(Stop::Error(format!("action {uuid} not found"))),
        Err(e) => Err(read_failed(e)),
    }
}

/// The action's stored progress, if it has any, as a progress frame.
async fn send_current_progress<T: Transport>(socket: &mut T, action: &Action) -> Result<(), Stop> {
    let Some(progress) = action.progress else {
        return Ok(());
    };
    let now = chrono::Utc::now().timestamp();
    let frame = stevedore_core::progress::logs_frame(progress, &action.progress_message, now);
    socket.send(None, frame.to_string().into()).await
}

fn read_failed(e: stevedore_core::Error) -> Stop {
    tracing::warn!(error = %e, "logs stream cannot read the store");
    Stop::Error("cannot read the action's logs; retry later".into())
}

/// Sends the stored lines after `last` (up to `until` when given), a page
/// at a time (one flush a page), and moves `last` on.
async fn catch_up<T: Transport>(
    socket: &mut T,
    store: &DynStore,
    uuid: Uuid,
    last: &mut i64,
    until: Option<i64>,
) -> Result<(), Stop> {
    loop {
        let page = store
            .logs_after(uuid, *last, LOG_PAGE)
            .await
            .map_err(read_failed)?;
        let full = page.len() as i64 == LOG_PAGE;
        let mut reached = false;
        for line in page {
            if until.is_some_and(|u| line.seq > u) {
                reached = true;
                break;
            }
            socket
                .feed(Some(line.seq), line.to_wire().to_string().into())
                .await?;
            *last = line.seq;
        }
        socket.flush().await?;
        if reached || !full || until.is_some_and(|u| *last >= u) {
            return Ok(());
        }
    }
}
