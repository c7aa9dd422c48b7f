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

use super::{
    authenticate_handshake, finish, namespaces_for, overflow_message, send_text, Delivery, Next, Stop,
    StreamState,
};
use crate::client_addr::ClientAddr;
use crate::error::ApiError;
use crate::input::integer;
use crate::routes::parse_uuid;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::str::FromStr;
use stevedore_shared::logline::LogLine;
use stevedore_shared::state::ActionState;
use stevedore_shared::store::{DynStore, Scope};
use uuid::Uuid;

/// Lines sent before following when the client gives no `tail`.
pub const DEFAULT_TAIL: i64 = 300;

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
        Ok((uuid, tail, follow)) => match ws {
            Err(rejection) => rejection.into_response(),
            Ok(ws) => super::configure(ws).on_upgrade(move |mut socket| async move {
                let stop = stream_logs(&mut socket, &s, uuid, tail, follow).await;
                finish(socket, stop).await;
            }),
        },
    }
}

/// Checks credentials, the action's visibility and the query before upgrading.
async fn prepare(
    s: &StreamState,
    ns: Option<String>,
    uuid: &str,
    q: &HashMap<String, String>,
    addr: ClientAddr,
    headers: &HeaderMap,
) -> Result<(Uuid, i64, bool), ApiError> {
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
    Ok((action.uuid, tail, follow))
}

async fn stream_logs(socket: &mut WebSocket, s: &StreamState, uuid: Uuid, tail: i64, follow: bool) -> Stop {
    // Register first: a line stored from now on reaches us live, one stored
    // before is in the tail we read next.
    let mut sub = follow.then(|| s.hub.subscribe_logs(uuid));
    let store = s.api.dispatcher.store().clone();
    let finished = match action_finished(&store, uuid).await {
        Ok(f) => f,
        Err(stop) => return stop,
    };
    let backlog = match store.logs(uuid, Some(tail.max(1))).await {
        Ok(lines) => lines,
        Err(e) => return read_failed(e),
    };
    let mut last = 0;
    for line in backlog {
        if tail > 0 {
            if let Err(stop) = send_text(socket, line.to_wire().to_string()).await {
                return stop;
            }
        }
        last = line.seq;
    }
    let Some(sub) = sub.as_mut() else {
        return Stop::Done;
    };
    if finished {
        return Stop::Done;
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
                        if let Err(stop) = send_text(socket, line.to_wire().to_string()).await {
                            return stop;
                        }
                        last = line.seq;
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
    match store.get_action(Scope::All, uuid).await {
        Ok(Some(a)) => Ok(a.state.is_final()),
        Ok(None) => Err(Stop::Error(format!("action {uuid} not found"))),
        Err(e) => Err(read_failed(e)),
    }
}

fn read_failed(e: stevedore_shared::Error) -> Stop {
    tracing::warn!(error = %e, "logs stream cannot read the store");
    Stop::Error("cannot read the action's logs; retry later".into())
}

/// Sends the stored lines after `last` (up to `until` when given) and moves
/// `last` on.
async fn catch_up(
    socket: &mut WebSocket,
    store: &DynStore,
    uuid: Uuid,
    last: &mut i64,
    until: Option<i64>,
) -> Result<(), Stop> {
    let lines = lines_after(store, uuid, *last).await.map_err(read_failed)?;
    for line in lines {
        if until.is_some_and(|u| line.seq > u) {
            break;
        }
        send_text(socket, line.to_wire().to_string()).await?;
        *last = line.seq;
    }
    Ok(())
}

/// The stored lines with `seq > after`, in order, reading a growing tail
/// until it reaches back far enough.
async fn lines_after(store: &DynStore, uuid: Uuid, after: i64) -> stevedore_shared::Result<Vec<LogLine>> {
    let mut n = 64;
    loop {
        let lines = store.logs(uuid, Some(n)).await?;
        let reached = lines.first().is_none_or(|l| l.seq <= after + 1);
        if reached || (lines.len() as i64) < n {
            return Ok(lines.into_iter().filter(|l| l.seq > after).collect());
        }
        n *= 4;
    }
}
