//! Server-Sent Events clients of the stream routes (`Accept:
//! text/event-stream`), reading events as an `EventSource` does.

use serde_json::Value;
use std::time::Duration;

/// How long an event-stream test waits for an event.
pub const SSE_WAIT: Duration = Duration::from_secs(30);

/// One event as an `EventSource` dispatches it.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// Its `id:`, if it had one.
    pub id: Option<String>,
    /// Its type (`message` unless `event:` named another).
    pub event: String,
    /// Its `data:` lines, joined by newlines.
    pub data: String,
}

impl SseEvent {
    /// The data as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {}", self.data))
    }

    /// The id as a number.
    pub fn id_number(&self) -> i64 {
        let id = self.id.as_deref().unwrap_or_else(|| panic!("no id: {self:?}"));
        id.parse()
            .unwrap_or_else(|_| panic!("id is not a number: {self:?}"))
    }
}

/// An open event stream.
pub struct Sse {
    resp: reqwest::Response,
    parser: Parser,
}

/// What an event stream produced next.
#[derive(Debug)]
pub enum SseNext {
    /// An event.
    Event(SseEvent),
    /// The response body ended.
    Ended,
    /// Nothing arrived within the wait.
    Silent,
}

/// Opens an event stream on `base` + `path` with Basic `auth` (when given)
/// and more `headers`. On any answer but a 200 event stream: its status and
/// body (JSON, or `Null`).
pub async fn sse_connect(
    base: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    headers: &[(&str, &str)],
) -> Result<Sse, (u16, Value)> {
    let mut req = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header("Accept", "text/event-stream");
    if let Some((u, k)) = auth {
        req = req.basic_auth(u, Some(k));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(SSE_WAIT, req.send())
        .await
        .unwrap_or_else(|_| panic!("event stream request to {path} timed out"))
        .unwrap_or_else(|e| panic!("event stream request to {path} failed: {e}"));
    let status = resp.status().as_u16();
    if status != 200 {
        let text = resp.text().await.unwrap_or_default();
        return Err((status, serde_json::from_str(&text).unwrap_or(Value::Null)));
    }
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(ct, "text/event-stream", "{path}");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    Ok(Sse {
        resp,
        parser: Parser::default(),
    })
}

/// The next event, skipping comments; waits at most `wait`.
pub async fn sse_next(sse: &mut Sse, wait: Duration) -> SseNext {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(e) = sse.parser.next_event() {
            return SseNext::Event(e);
        }
        match tokio::time::timeout_at(deadline, sse.resp.chunk()).await {
            Err(_) => return SseNext::Silent,
            Ok(Ok(Some(bytes))) => sse.parser.push(&bytes),
            Ok(Ok(None)) | Ok(Err(_)) => return SseNext::Ended,
        }
    }
}

/// The next event, which must be a `message`; panics on anything else.
pub async fn sse_message(sse: &mut Sse) -> SseEvent {
    match sse_next(sse, SSE_WAIT).await {
        SseNext::Event(e) if e.event == "message" => e,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Every message until the `close` event, whose code it returns; panics if
/// the stream does not close so within [`SSE_WAIT`] or goes on after it.
pub async fn sse_until_close(sse: &mut Sse) -> (Vec<SseEvent>, u16) {
    let mut messages = vec![];
    loop {
        match sse_next(sse, SSE_WAIT).await {
            SseNext::Event(e) if e.event == "message" => messages.push(e),
            SseNext::Event(e) if e.event == "close" => {
                let code = e.json()["code"].as_u64().expect("a close code") as u16;
                match sse_next(sse, SSE_WAIT).await {
                    SseNext::Ended => return (messages, code),
                    other => panic!("the stream went on after its close event: {other:?}"),
                }
            }
            other => panic!(
                "stream did not close cleanly: {other:?} after {} messages",
                messages.len()
            ),
        }
    }
}

/// The event-stream format, fed in whatever pieces the body comes in.
#[derive(Default)]
pub struct Parser {
    pending: Vec<u8>,
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
}

impl Parser {
    /// Takes more of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// The next complete event, if one has arrived.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8(line).expect("UTF-8");
            let line = line.trim_end_matches('\n').trim_end_matches('\r');
            if line.is_empty() {
                let (id, event, data) = (self.id.take(), self.event.take(), self.data.take());
                if let Some(data) = data {
                    return Some(SseEvent {
                        id,
                        event: event.unwrap_or_else(|| "message".into()),
                        data,
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_string();
            match field {
                "id" => self.id = Some(value),
                "event" => self.event = Some(value),
                "data" => match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(&value);
                    }
                    None => self.data = Some(value),
                },
                _ => {}
            }
        }
        None
    }
}

/// Undoes HTTP/1.1 chunked transfer coding of a body read raw off a socket,
/// as far as it arrived (a connection cut mid-chunk gives what came).
pub fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&raw[..eol]).ok().and_then(|s| {
            let s = s.split(';').next().unwrap_or("").trim();
            usize::from_str_radix(s, 16).ok()
        });
        let Some(size) = size else {
            return out;
        };
        raw = &raw[eol + 2..];
        if size == 0 {
            return out;
        }
        let take = size.min(raw.len());
        out.extend_from_slice(&raw[..take]);
        if take < size || raw.len() < size + 2 {
            return out;
        }
        raw = &raw[size + 2..];
    }
}
