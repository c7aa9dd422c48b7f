//! Websocket clients of the stream service (action logs, the events stream).

use serde_json::Value;
use std::time::Duration;

/// A client websocket.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a websocket test waits for a frame.
pub const WS_WAIT: Duration = Duration::from_secs(30);

/// Opens a websocket on `base` (an `http://` URL) + `path`, with Basic auth
/// like the SDKs send. Returns the handshake's HTTP status on refusal.
pub async fn ws_connect(base: &str, path: &str, auth: Option<(&str, &str)>) -> Result<Ws, u16> {
    use base64::Engine;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}{}", base.replacen("http://", "ws://", 1), path);
    let mut req = url.into_client_request().expect("websocket request");
    req.headers_mut()
        .insert("User-Agent", "stevedore-tests/1.0".parse().unwrap());
    if let Some((u, k)) = auth {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{k}"));
        req.headers_mut()
            .insert("Authorization", format!("Basic {b}").parse().unwrap());
    }
    match tokio::time::timeout(WS_WAIT, tokio_tungstenite::connect_async(req)).await {
        Err(_) => panic!("websocket handshake to {path} timed out"),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => Err(resp.status().as_u16()),
        Ok(Err(e)) => panic!("websocket handshake to {path} failed: {e}"),
    }
}

/// What a websocket produced next.
#[derive(Debug)]
pub enum WsNext {
    /// A text frame, parsed as JSON.
    Json(Value),
    /// The server sent a close frame (with its code).
    Closed(u16),
    /// The connection ended without a close frame.
    Ended,
    /// Nothing arrived within the wait.
    Silent,
}

/// The next text frame or close, skipping pings and pongs.
pub async fn ws_next(ws: &mut Ws, wait: Duration) -> WsNext {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return WsNext::Silent,
            Ok(None) | Ok(Some(Err(_))) => return WsNext::Ended,
            Ok(Some(Ok(Message::Text(t)))) => {
                return WsNext::Json(
                    serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {t}")),
                )
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                return WsNext::Closed(frame.map(|f| u16::from(f.code)).unwrap_or(1005))
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// The next JSON frame; panics on close, end or silence.
pub async fn ws_json(ws: &mut Ws) -> Value {
    match ws_next(ws, WS_WAIT).await {
        WsNext::Json(v) => v,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// Every frame until the server closes the socket; panics if it does not
/// within [`WS_WAIT`]. Returns the frames and the close code.
pub async fn ws_until_close(ws: &mut Ws) -> (Vec<Value>, u16) {
    let mut frames = vec![];
    loop {
        match ws_next(ws, WS_WAIT).await {
            WsNext::Json(v) => frames.push(v),
            WsNext::Closed(code) => return (frames, code),
            other => panic!(
                "socket did not close cleanly: {other:?} after {} frames",
                frames.len()
            ),
        }
    }
}
