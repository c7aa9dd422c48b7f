//! `logs`: log lines per second from one action to a client following its
//! logs websocket. The action is an `exec` of `seq 1 <lines>`; the client
//! connects as soon as the POST returns, asks for the whole backlog
//! (`tail` ≥ lines) and follows until the server closes at Success.

use crate::rig::{Options, Rig};
use anyhow::{Context, Result};
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Lines per second from `seq 1 <lines>` to a following logs websocket.
pub async fn logs(lines: u64) -> Result<Value> {
    let rig = Rig::start_with(Options {
        workers: 1,
        stream: true,
        lines,
    })
    .await?;
    let http = rig.client();
    let svc = rig.create_service(&http).await?;
    let posted = Instant::now();
    let uuid = rig.post_verb(&http, &svc, "lines").await?;
    let path = format!(
        "/api/audit/v1/action/{uuid}/logs/?follow=true&tail={}",
        lines + 100
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(rig.ws_url(&path))
        .await
        .context("logs websocket")?;
    let connected = posted.elapsed();
    let (mut received, mut numbered, mut in_order) = (0u64, 0u64, true);
    let (mut first, mut last) = (None, posted);
    let mut close = None;
    while let Some(frame) = ws.next().await {
        match frame? {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                if v["type"] != "log" {
                    anyhow::bail!("unexpected frame: {v}");
                }
                last = Instant::now();
                first.get_or_insert(last);
                received += 1;
                if let Some(n) = v["log"].as_str().and_then(|l| l.parse::<u64>().ok()) {
                    numbered += 1;
                    in_order &= n == numbered;
                }
            }
            Message::Close(c) => {
                close = c.map(|c| u16::from(c.code));
                break;
            }
            _ => {}
        }
    }
    let seconds = last.duration_since(posted).as_secs_f64();
    let stored = rig.dispatcher.store().logs(uuid.parse()?, None).await?.len();
    rig.stop().await;
    Ok(json!({
        "scenario": "logs", "lines": lines, "received": received, "numbered_lines": numbered,
        "in_order": in_order, "stored": stored, "close_code": close,
        "connected_after_ms": connected.as_secs_f64() * 1000.0,
        "first_line_after_ms": first.map(|f| f.duration_since(posted).as_secs_f64() * 1000.0),
        "seconds": seconds,
        "lines_per_sec": received as f64 / seconds,
        "measured": "from the POST to the last line received; every line of the action counts",
    }))
}
