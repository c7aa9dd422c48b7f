//! `GET /api/audit/v1/[<ns>/]action/<uuid>/logs/` and `/v1/action/<uuid>/logs/`
//! (websocket; `tail`, default 300; `follow`, default true).
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

use super::{
    authenticate_handshake, feed_text, finish, flush, namespaces_for, overflow_message, Delivery, Next, Stop,
    StreamState,
};
use crate::client_addr::ClientAddr;
use crate::error::ApiError;
use crate::input::integer;
use crate::routes::parse_uuid;
use crate::user_slots::UserSlot;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
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

type Upgrade = Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>;

/// The handler without a namespace segment.
pub async fn handler(
    State(s): State<StreamState>,
    Path(uuid): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    addr: ClientAddr,
    headers: HeaderMap,
    ws: Upgrade,
) -> Response {
    handle(s, None, uuid, q, addr, headers, ws).await
}

/// The handler with a namespace segment.
pub async fn handler_ns(
    State(s): State<StreamState>,
    Path((ns, uuid)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    addr: ClientAddr,
    headers: HeaderMap,
    ws: Upgrade,
) -> Response {
    handle(s, Some(ns), uuid, q, addr, headers, ws).await
}

async fn handle(
    s: StreamState,
    ns: Option<String>,
    uuid: String,
    q: HashMap<String, String>,
    addr: ClientAddr,
    headers: HeaderMap,
    ws: Upgrade,
) -> Response {
    match prepare(&s, ns, &uuid, &q, addr, &headers).await {
        Err(e) => e.into_response(),
        Ok((uuid, tail, follow, slot)) => match ws {
            Err(rejection) => rejection.into_response(),
            Ok(ws) => super::configure(ws).on_upgrade(move |mut socket| async move {
                let _slot = slot;
                let stop = stream_logs(&mut socket, &s, uuid, tail, follow).await;
                finish(socket, stop).await;
            }),
        },
    }
}

/// Checks credentials, the action's visibility and the query before
/// upgrading, and takes one of the caller's websocket slots. A `tail` above
/// `[http] max_log_tail` is read as that maximum.
async fn prepare(
    s: &StreamState,
    ns: Option<String>,
    uuid: &str,
    q: &HashMap<String, String>,
    addr: ClientAddr,
    headers: &HeaderMap,
) -> Result<(Uuid, i64, bool, UserSlot), ApiError> {
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
    let slot = s.api.websockets.acquire(&caller.user)?;
    Ok((action.uuid, tail.min(s.api.limits.max_log_tail), follow, slot))
}

async fn stream_logs(socket: &mut WebSocket, s: &StreamState, uuid: Uuid, tail: i64, follow: bool) -> Stop {
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
    let newest = match store.logs(uuid, Some(1)).await {
        Ok(lines) => lines.last().map_or(0, |l| l.seq),
        Err(e) => return read_failed(e),
    };
    let mut last = (newest - tail).max(0);
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
            m = socket.recv() => match m {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Stop::Gone,
                Some(Ok(_)) => {}
            },
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
                        if let Err(stop) = feed_text(socket, line.to_wire().to_string()).await {
                            return stop;
                        }
                        last = line.seq;
                    }
                    if let Err(stop) = flush(socket).await {
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
                    if let Err(stop) = feed_text(socket, p.logs_frame.clone()).await {
                        return stop;
                    }
                    if let Err(stop) = flush(socket).await {
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
async fn send_current_progress(socket: &mut WebSocket, action: &Action) -> Result<(), Stop> {
    let Some(progress) = action.progress else {
        return Ok(());
    };
    let now = chrono::Utc::now().timestamp();
    let frame = stevedore_core::progress::logs_frame(progress, &action.progress_message, now);
    feed_text(socket, frame.to_string()).await?;
    flush(socket).await
}

fn read_failed(e: stevedore_core::Error) -> Stop {
    tracing::warn!(error = %e, "logs stream cannot read the store");
    Stop::Error("cannot read the action's logs; retry later".into())
}

/// Sends the stored lines after `last` (up to `until` when given), a page
/// at a time (one flush a page), and moves `last` on.
async fn catch_up(
    socket: &mut WebSocket,
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
            feed_text(socket, line.to_wire().to_string()).await?;
            *last = line.seq;
        }
        flush(socket).await?;
        if reached || !full || until.is_some_and(|u| *last >= u) {
            return Ok(());
        }
    }
}
