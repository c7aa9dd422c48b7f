//! The websocket side: action logs and the events stream.

use super::http::{error_message, root_cause, user_agent, Api, ApiError};
use futures::StreamExt;
use serde_json::Value;
use std::time::Duration;
use stevedore_core::reconnect::Reconnect;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, Message};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a websocket handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens a websocket on the stream URL + `path`, with the same
/// `Authorization` header as REST requests.
async fn connect(api: &Api, path: &str) -> Result<Ws, ApiError> {
    let unreachable = |cause: String| ApiError::Unreachable {
        url: api.stream_url.clone(),
        cause,
    };
    let base = super::config::websocket_url(&api.stream_url);
    let mut req = format!("{base}{path}")
        .into_client_request()
        .map_err(|e| unreachable(e.to_string()))?;
    let h = req.headers_mut();
    h.insert(
        "Authorization",
        api.auth_header()
            .parse()
            .map_err(|_| ApiError::Invalid("the credentials are not a valid header".into()))?,
    );
    h.insert("User-Agent", user_agent().parse().expect("ascii user agent"));
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_tungstenite::connect_async(req)).await {
        Err(_) => Err(unreachable("websocket handshake timed out".into())),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let status = resp.status();
            if status == tungstenite::http::StatusCode::UNAUTHORIZED {
                return Err(ApiError::Unauthorized);
            }
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(ApiError::Status {
                status: reqwest::StatusCode::from_u16(status.as_u16())
                    .unwrap_or(reqwest::StatusCode::BAD_GATEWAY),
                message: error_message(&body),
            })
        }
        Ok(Err(e)) => Err(unreachable(root_cause(&e))),
    }
}

/// How a logs socket ended.
#[derive(Debug, PartialEq, Eq)]
pub enum LogsEnd {
    /// The server closed it normally: the backlog was sent (no follow) or the
    /// action finished (follow).
    Closed,
    /// It ended some other way (network, server restart, error frame).
    Dropped(String),
}

/// The path of an action's logs socket.
pub fn logs_path(uuid: &str, tail: Option<u64>, follow: bool) -> String {
    let mut p = format!("/api/audit/v1/action/{uuid}/logs/?follow={follow}");
    if let Some(t) = tail {
        p.push_str(&format!("&tail={t}"));
    }
    p
}

/// What an action's logs socket sends besides errors.
#[derive(Debug, PartialEq, Eq)]
pub enum LogFrame<'a> {
    /// A log line.
    Line(&'a str),
    /// A progress report: percent done (0–100) and its message.
    Progress(u8, &'a str),
}

impl<'a> LogFrame<'a> {
    /// The frame a parsed text frame is, if it is a line or a progress report.
    pub fn of(v: &'a Value) -> Option<LogFrame<'a>> {
        match v.get("type").and_then(Value::as_str) {
            Some("log") => Some(LogFrame::Line(
                v.get("log").and_then(Value::as_str).unwrap_or_default(),
            )),
            Some("progress") => {
                let percent = v.get("progress").and_then(Value::as_u64)?;
                let message = v
                    .get("progress_message")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                Some(LogFrame::Progress(u8::try_from(percent.min(100)).ok()?, message))
            }
            _ => None,
        }
    }
}

/// Streams an action's log lines and progress reports to `on_frame` until
/// the socket ends.
pub async fn logs(
    api: &Api,
    uuid: &str,
    tail: Option<u64>,
    follow: bool,
    mut on_frame: impl FnMut(LogFrame<'_>),
) -> Result<LogsEnd, ApiError> {
    let mut ws = connect(api, &logs_path(uuid, tail, follow)).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                    continue;
                };
                if let Some(frame) = LogFrame::of(&v) {
                    on_frame(frame);
                    continue;
                }
                if v.get("type").and_then(Value::as_str) == Some("error") {
                    let m = v["data"]["errorMessage"]
                        .as_str()
                        .unwrap_or("error frame")
                        .to_string();
                    let _ = ws.close(None).await;
                    return Ok(LogsEnd::Dropped(m));
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let normal = frame
                    .as_ref()
                    .is_none_or(|f| f.code == tungstenite::protocol::frame::coding::CloseCode::Normal);
                return Ok(if normal {
                    LogsEnd::Closed
                } else {
                    LogsEnd::Dropped(format!("closed by the server ({})", frame.unwrap().reason))
                });
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Ok(LogsEnd::Dropped(root_cause(&e))),
            None => return Ok(LogsEnd::Dropped("connection closed".into())),
        }
    }
}

/// The path of the events socket, resuming after `since`.
pub fn events_path(since: Option<i64>) -> String {
    match since {
        Some(s) => format!("/api/audit/v1/events?since={s}"),
        None => "/api/audit/v1/events".to_string(),
    }
}

/// Where the events stream is: what to resume from, what to print.
#[derive(Debug, Default)]
pub struct EventCursor {
    /// The `seq` to resume after (the auth frame's, then the last event's).
    pub since: Option<i64>,
}

impl EventCursor {
    /// Takes one text frame; returns what to print, if anything. The auth
    /// frame and error frames are not printed; an event at or below the
    /// resume point (a replay overlap) is dropped.
    pub fn frame(&mut self, text: &str) -> Frame {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return Frame::Skip;
        };
        match v.get("type").and_then(Value::as_str) {
            Some("auth") => {
                if self.since.is_none() {
                    self.since = v["data"]["seq"].as_i64();
                }
                Frame::Skip
            }
            Some("error") => Frame::Error(
                v["data"]["errorMessage"]
                    .as_str()
                    .unwrap_or("error frame")
                    .to_string(),
            ),
            _ => {
                if let Some(seq) = v.get("seq").and_then(Value::as_i64) {
                    if self.since.is_some_and(|s| seq <= s) {
                        return Frame::Skip;
                    }
                    self.since = Some(seq);
                }
                Frame::Print
            }
        }
    }
}

/// What to do with an events frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Print it verbatim.
    Print,
    /// Not an event.
    Skip,
    /// The server reported an error (it closes the socket next).
    Error(String),
}

/// The first and longest wait before reconnecting to the events stream.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Follows the events stream forever, printing each event's JSON on its own
/// line; reconnects with backoff and resumes after the last `seq` seen. Ends
/// only on a refused handshake that retrying cannot fix (401, 404).
pub async fn follow_events(
    api: &Api,
    since: Option<i64>,
    mut print: impl FnMut(&str),
) -> Result<(), ApiError> {
    let mut cursor = EventCursor { since };
    let mut reconnect = Reconnect::new(RECONNECT_MIN, RECONNECT_MAX);
    loop {
        let why = match connect(api, &events_path(cursor.since)).await {
            Err(e @ ApiError::Unauthorized) => return Err(e),
            Err(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => return Err(e),
            Err(e) => e.to_string(),
            Ok(mut ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => match cursor.frame(t.as_str()) {
                        Frame::Print => {
                            reconnect.reset();
                            print(t.as_str());
                        }
                        Frame::Skip => reconnect.reset(),
                        Frame::Error(m) => eprintln!("event stream: server error: {m}"),
                    },
                    Some(Ok(Message::Close(frame))) => {
                        break match frame {
                            Some(f) if !f.reason.is_empty() => format!("closed by the server ({})", f.reason),
                            _ => "closed by the server".to_string(),
                        };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break root_cause(&e),
                    None => break "connection closed".to_string(),
                }
            },
        };
        let delay = reconnect.next_delay();
        eprintln!(
            "event stream: {why}; reconnecting in {}",
            humantime::format_duration(delay)
        );
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_the_ones_the_stream_service_serves() {
        assert_eq!(
            logs_path("abc", None, true),
            "/api/audit/v1/action/abc/logs/?follow=true"
        );
        assert_eq!(
            logs_path("abc", Some(0), false),
            "/api/audit/v1/action/abc/logs/?follow=false&tail=0"
        );
        assert_eq!(events_path(None), "/api/audit/v1/events");
        assert_eq!(events_path(Some(42)), "/api/audit/v1/events?since=42");
    }

    #[test]
    fn log_frames_are_lines_or_progress() {
        let parse = |t: &str| serde_json::from_str::<Value>(t).unwrap();
        let v = parse(r#"{"type":"log","log":"hello","timestamp":1}"#);
        assert_eq!(LogFrame::of(&v), Some(LogFrame::Line("hello")));
        let v = parse(r#"{"type":"progress","progress":42,"progress_message":"Copying","timestamp":1}"#);
        assert_eq!(LogFrame::of(&v), Some(LogFrame::Progress(42, "Copying")));
        let v = parse(r#"{"type":"progress","progress_message":"no number"}"#);
        assert_eq!(LogFrame::of(&v), None);
        let v = parse(r#"{"type":"error","data":{"errorMessage":"x"}}"#);
        assert_eq!(LogFrame::of(&v), None);
    }

    #[test]
    fn the_cursor_resumes_after_the_last_event_and_hides_auth_and_overlap() {
        let mut c = EventCursor::default();
        assert_eq!(
            c.frame(r#"{"type":"auth","data":{"user":"u","namespaces":["u"],"seq":10}}"#),
            Frame::Skip
        );
        assert_eq!(c.since, Some(10));
        assert_eq!(events_path(c.since), "/api/audit/v1/events?since=10");
        assert_eq!(c.frame(r#"{"type":"action","seq":11}"#), Frame::Print);
        assert_eq!(c.frame(r#"{"type":"service","seq":12}"#), Frame::Print);
        // After a reconnect the auth frame carries a newer seq: the resume
        // point stays the last event printed.
        assert_eq!(c.frame(r#"{"type":"auth","data":{"seq":20}}"#), Frame::Skip);
        assert_eq!(c.since, Some(12));
        // A replayed event already printed is dropped.
        assert_eq!(c.frame(r#"{"type":"action","seq":12}"#), Frame::Skip);
        assert_eq!(c.frame(r#"{"type":"action","seq":13}"#), Frame::Print);
        assert_eq!(
            c.frame(r#"{"type":"error","data":{"errorMessage":"client too slow"}}"#),
            Frame::Error("client too slow".into())
        );
        assert_eq!(c.frame("not json"), Frame::Skip);
        assert_eq!(c.since, Some(13));
    }
}
