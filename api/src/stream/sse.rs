//! Server-Sent Events: every stream route also answers a request that
//! accepts `text/event-stream` and asks for no websocket (`EventSource`,
//! `curl -N`), with the same frames.
//!
//! Framing: each JSON frame a websocket would get is one event of the
//! default type (`message`), its JSON on one `data:` line, so an
//! `EventSource`'s `onmessage` gets exactly what a websocket's `onmessage`
//! gets. A frame that is a resume point carries it as `id:` (the events
//! stream: the highest `seq` sent, the `auth` frame's `seq` at first; an
//! action's logs: the line's number), and a reconnecting client sends it
//! back as `Last-Event-ID`. Progress reports are ephemeral and carry none. Where a websocket would get a close frame the
//! stream ends with `event: close` and `data: {"code":…,"reason":…}` (1000:
//! finished, do not reconnect; 1001: the server is shutting down; 1011: an
//! error, reported by the `error` frame before it). A comment line
//! (`: keep-alive`) goes out after [`KEEP_ALIVE`] without a frame, so
//! proxies keep the connection and a client that went away is noticed.
//!
//! Backpressure is the websocket's: the per-client logic runs in a task of
//! its own and writes into a small queue the response body is read from
//! ([`BODY_CHUNKS`] chunks of about [`super::WRITE_BUFFER`]); a write that
//! waits longer than [`super::WRITE_TIMEOUT`] (the client stopped reading)
//! drops the client, and so does a hub queue that overflows meanwhile.

use super::transport::{StreamClient, Transport};
use super::{error_frame, Stop, WRITE_BUFFER, WRITE_TIMEOUT};
use crate::user_slots::UserSlot;
use axum::body::{Body, Bytes};
use axum::extract::ws::Utf8Bytes;
use axum::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// The media type of an event stream.
pub const EVENT_STREAM: &str = "text/event-stream";

/// Silence after which a comment line keeps the connection alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Chunks written but not yet taken by the connection. With the connection's
/// own buffers this is what a client that stopped reading holds up before
/// writes wait (and, after [`WRITE_TIMEOUT`], the client is dropped).
pub const BODY_CHUNKS: usize = 4;

/// Whether the request asks for an event stream: `Accept` names
/// `text/event-stream` (parameters and other types aside).
pub fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case(EVENT_STREAM))
        })
}

/// Answers with an event stream fed by `client` from a task of its own
/// (on the stream runtime, [`super::socket_runtime`]);
/// `slot` (the caller's per-user stream slot) is held until it ends.
pub(crate) fn respond<C: StreamClient>(slot: UserSlot, client: C) -> Response {
    let (tx, rx) = mpsc::channel(BODY_CHUNKS);
    super::socket_runtime::spawn(async move {
        let _slot = slot;
        metrics::gauge!(crate::ops::EVENT_STREAM_CLIENTS).increment(1.0);
        let mut sse = SseTransport {
            tx,
            buf: Vec::with_capacity(1024),
        };
        let stop = client.run(&mut sse).await;
        tracing::debug!(?stop, "event stream ended");
        sse.finish(stop).await;
        metrics::gauge!(crate::ops::EVENT_STREAM_CLIENTS).decrement(1.0);
    });
    (
        StatusCode::OK,
        [
            (CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM)),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // nginx would otherwise hold events back to fill its buffer.
            (
                HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        Body::new(SseBody { rx }),
    )
        .into_response()
}

/// The writing side of one event stream.
pub(crate) struct SseTransport {
    tx: mpsc::Sender<Bytes>,
    /// What was fed and not yet written.
    buf: Vec<u8>,
}

impl SseTransport {
    /// Hands `chunk` to the response body, waiting at most [`WRITE_TIMEOUT`]
    /// for room ([`Stop::Gone`] then, or once the client went away).
    async fn write(&mut self, chunk: Bytes) -> Result<(), Stop> {
        match self.tx.try_send(chunk) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Stop::Gone),
            Err(mpsc::error::TrySendError::Full(chunk)) => {
                match tokio::time::timeout(WRITE_TIMEOUT, self.tx.send(chunk)).await {
                    Ok(Ok(())) => Ok(()),
                    _ => Err(Stop::Gone),
                }
            }
        }
    }

    fn push_event(&mut self, id: Option<i64>, event: Option<&str>, data: &str) {
        push_event(&mut self.buf, id, event, data);
    }
}

/// Appends one event: `id:`, `event:` when given, a `data:` line per line
/// of `data`, and the blank line that ends it.
fn push_event(buf: &mut Vec<u8>, id: Option<i64>, event: Option<&str>, data: &str) {
    use std::io::Write;
    if let Some(id) = id {
        let _ = writeln!(buf, "id: {id}");
    }
    if let Some(event) = event {
        let _ = writeln!(buf, "event: {event}");
    }
    for line in data.split('\n') {
        buf.extend_from_slice(b"data: ");
        buf.extend_from_slice(line.strip_suffix('\r').unwrap_or(line).as_bytes());
        buf.push(b'\n');
    }
    buf.push(b'\n');
}

impl Transport for SseTransport {
    async fn feed(&mut self, id: Option<i64>, frame: Utf8Bytes) -> Result<(), Stop> {
        self.push_event(id, None, frame.as_str());
        if self.buf.len() >= WRITE_BUFFER {
            self.flush().await
        } else {
            Ok(())
        }
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.write(chunk).await
    }

    async fn gone(&mut self) {
        loop {
            tokio::select! {
                _ = self.tx.closed() => return,
                _ = tokio::time::sleep(KEEP_ALIVE) => {
                    // A client that is behind anyway needs no keep-alive.
                    if let Err(mpsc::error::TrySendError::Closed(_)) =
                        self.tx.try_send(Bytes::from_static(b": keep-alive\n\n"))
                    {
                        return;
                    }
                }
            }
        }
    }

    async fn finish(mut self, stop: Stop) {
        let Some((code, reason)) = stop.close_code() else {
            return;
        };
        if let Stop::Error(message) = &stop {
            self.push_event(None, None, &error_frame(message));
        }
        let close = json!({"code": code, "reason": reason}).to_string();
        self.push_event(None, Some("close"), &close);
        let _ = self.flush().await;
    }
}

/// The response body: the chunks the client's task writes, until it drops
/// its end.
struct SseBody {
    rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(http_body::Frame::data(c))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_names_the_event_stream_among_others() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(ACCEPT, HeaderValue::from_static(v));
            h
        };
        assert!(wants_event_stream(&with("text/event-stream")));
        assert!(wants_event_stream(&with(
            "application/json, Text/Event-Stream;q=0.9"
        )));
        assert!(!wants_event_stream(&with("*/*")));
        assert!(!wants_event_stream(&with("text/event-streams")));
        assert!(!wants_event_stream(&HeaderMap::new()));
    }

    #[test]
    fn an_event_has_its_id_its_type_and_a_data_line_per_line() {
        let mut buf = vec![];
        push_event(&mut buf, Some(42), None, r#"{"seq":42}"#);
        push_event(&mut buf, None, Some("close"), "a\r\nb");
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "id: 42\ndata: {\"seq\":42}\n\nevent: close\ndata: a\ndata: b\n\n"
        );
    }

    /// The body gives what was written, in chunks; once the client (the
    /// body) is gone, writes fail and the writer's wait for it ends.
    #[tokio::test]
    async fn the_body_gives_what_was_written_until_the_client_goes() {
        use http_body::Body as _;
        let (tx, rx) = mpsc::channel(BODY_CHUNKS);
        let mut t = SseTransport { tx, buf: vec![] };
        let mut body = SseBody { rx };
        t.feed(Some(1), "{}".into()).await.unwrap();
        t.flush().await.unwrap();
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            frame.into_data().unwrap(),
            Bytes::from_static(b"id: 1\ndata: {}\n\n")
        );
        drop(body);
        t.feed(None, "{}".into()).await.unwrap();
        assert!(matches!(t.flush().await, Err(Stop::Gone)), "the client went away");
        t.gone().await;
    }
}
