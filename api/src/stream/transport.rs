//! How a stream route's client is served: over a websocket, or as
//! Server-Sent Events ([`super::sse`]). The per-client logic (the events
//! stream, an action's logs) is written once against [`Transport`]; the two
//! differ only in framing and in how they notice a client that went away.
//!
//! A request that accepts `text/event-stream` and asks for no websocket
//! upgrade gets an event stream; anything else is taken as a websocket
//! handshake (and refused as axum refuses a bad one).

use super::{configure, feed_text, finish, flush, sse, Stop};
use crate::user_slots::UserSlot;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use std::future::Future;

/// Where a stream client's frames go.
pub(crate) trait Transport: Send {
    /// Queues one JSON frame, written out by [`Transport::flush`] (or
    /// earlier, once a write buffer's worth is queued). `id` is the resume
    /// point the frame stands for, if it is one: an event stream sends it as
    /// the event's `id`, a websocket has no place for it.
    fn feed(&mut self, id: Option<i64>, frame: Utf8Bytes) -> impl Future<Output = Result<(), Stop>> + Send;

    /// Writes out what was fed.
    fn flush(&mut self) -> impl Future<Output = Result<(), Stop>> + Send;

    /// Feeds one frame and writes it out.
    fn send(&mut self, id: Option<i64>, frame: Utf8Bytes) -> impl Future<Output = Result<(), Stop>> + Send {
        async move {
            self.feed(id, frame).await?;
            self.flush().await
        }
    }

    /// Resolves once the client went away; meanwhile it takes what the
    /// client sends (a websocket's pings) and keeps the connection alive.
    /// Cancel-safe: a client loop waits on it beside its queue.
    fn gone(&mut self) -> impl Future<Output = ()> + Send;

    /// Ends the connection as `stop` says: an `error` frame first for
    /// [`Stop::Error`], then the close (nothing more for [`Stop::Gone`]).
    fn finish(self, stop: Stop) -> impl Future<Output = ()> + Send;
}

/// The per-client logic of a stream route, run over either transport.
pub(crate) trait StreamClient: Send + 'static {
    /// Serves the client until it, the stream or the process ends.
    fn run<T: Transport>(self, transport: &mut T) -> impl Future<Output = Stop> + Send;
}

/// What a stream route's request asks for.
pub enum Handshake {
    /// A websocket.
    Websocket(WebSocketUpgrade),
    /// Server-Sent Events (`Accept: text/event-stream`, no upgrade).
    EventStream,
    /// Neither: a websocket handshake axum refuses, with its answer.
    Refused(WebSocketUpgradeRejection),
}

impl Handshake {
    /// Whether the answer is an event stream.
    pub fn is_event_stream(&self) -> bool {
        matches!(self, Handshake::EventStream)
    }

    /// Serves `client` as asked, holding `slot` (one of the caller's
    /// per-user stream slots) until the connection ends.
    pub(crate) fn serve<C: StreamClient>(self, slot: UserSlot, client: C) -> Response {
        match self {
            Handshake::Refused(rejection) => rejection.into_response(),
            Handshake::EventStream => sse::respond(slot, client),
            Handshake::Websocket(ws) => configure(ws).on_upgrade(move |socket| async move {
                super::socket_runtime::spawn(async move {
                    let _slot = slot;
                    let mut ws = WsTransport { socket };
                    let stop = client.run(&mut ws).await;
                    ws.finish(stop).await;
                });
            }),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Handshake {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if sse::wants_event_stream(&parts.headers) && !crate::origin::is_websocket_handshake(&parts.headers) {
            return Ok(Handshake::EventStream);
        }
        Ok(match WebSocketUpgrade::from_request_parts(parts, state).await {
            Ok(ws) => Handshake::Websocket(ws),
            Err(rejection) => Handshake::Refused(rejection),
        })
    }
}

/// A websocket as a [`Transport`]: text frames, pings answered by axum.
pub(crate) struct WsTransport {
    socket: WebSocket,
}

impl Transport for WsTransport {
    async fn feed(&mut self, _id: Option<i64>, frame: Utf8Bytes) -> Result<(), Stop> {
        feed_text(&mut self.socket, frame).await
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        flush(&mut self.socket).await
    }

    async fn gone(&mut self) {
        loop {
            match self.socket.recv().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    }

    async fn finish(self, stop: Stop) {
        finish(self.socket, stop).await
    }
}
