//! Stream fan-out benchmark: N websocket clients follow the events stream of
//! a `stevedore dev` server while actions run, and the delivery latency of
//! each event to each client is measured.
//!
//! ```text
//! cargo bench --bench stream -- [--clients 1000] [--actions 200] [--rate 20]
//! ```
//!
//! Prints one JSON object: latency from the start of the submitting `POST` to
//! the arrival of the action's `create` event (p50/p99/max over every client
//! and action) and of its final `update` (Success), the server's resident
//! memory before and after the clients connect (and per client), and how many
//! clients the server disconnected.
//!
//! `STREAM_BENCH_SERVER=<path>` runs that `stevedore` binary instead of the
//! one built with the benchmark (to compare two builds with the same
//! clients).
//!
//! The clients share the machine with the server, so they are kept cheap:
//! an 8 KiB read buffer each (tungstenite zeroes the free part of its read
//! buffer, 128 KiB by default, before every read), one deadline per client
//! rather than a timer per frame, and each frame is scanned for the four
//! fields it is checked on (`type`, `action`, `uuid`, `state`) instead of
//! being parsed as a whole. Every frame is still read, timestamped on
//! arrival and checked.

use futures::StreamExt;
use reqwest::Method;
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

const CONFIG: &str = r#"
[http]
# Every client is the same user, on one process.
max_websockets_per_user = 100000
max_connections = 100000

[worker]
concurrency = 16

[[operation]]
object = "service"
verb = "noop"
handler = "noop"
"#;

struct Args {
    clients: usize,
    actions: usize,
    rate: f64,
}

fn args() -> Args {
    let mut a = Args {
        clients: 1000,
        actions: 200,
        rate: 20.0,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--clients" => a.clients = value.parse().expect("--clients N"),
            "--actions" => a.actions = value.parse().expect("--actions N"),
            "--rate" => a.rate = value.parse().expect("--rate per second"),
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}; use --clients, --actions, --rate"),
        }
        i += 2;
    }
    a
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// What a client checks in a frame.
#[derive(Default)]
struct Frame<'a> {
    kind: &'a str,
    action: &'a str,
    uuid: &'a str,
    state: &'a str,
}

/// If `t` starts with `key` (`,"name":"`), the string value after it and
/// what follows its closing quote.
fn value_at<'a>(t: &'a str, key: &str) -> Option<(&'a str, &'a str)> {
    let rest = t.strip_prefix(key)?;
    let end = rest.find('"')?;
    Some((&rest[..end], &rest[end + 1..]))
}

/// The string value after `key` (`"name":"`) anywhere in `t`.
fn field<'a>(t: &'a str, key: &str) -> &'a str {
    t.find(key)
        .and_then(|at| value_at(&t[at..], key))
        .map_or("", |(v, _)| v)
}

/// Reads the four fields of a frame the server wrote: compact JSON whose
/// values read here never hold escapes. An event's fields come in their
/// declared order (type, action, uuid, resource_uri, state, …), so they are
/// read where they are expected, with a search as the fallback.
fn scan(t: &str) -> Frame<'_> {
    let in_order = || {
        let (kind, r) = value_at(t, r#"{"type":""#)?;
        if kind != "action" {
            return Some(Frame {
                kind,
                ..Frame::default()
            });
        }
        let (action, r) = value_at(r, r#","action":""#)?;
        let (uuid, r) = value_at(r, r#","uuid":""#)?;
        let (_, r) = value_at(r, r#","resource_uri":""#)?;
        let (state, _) = value_at(r, r#","state":""#)?;
        Some(Frame {
            kind,
            action,
            uuid,
            state,
        })
    };
    in_order().unwrap_or_else(|| Frame {
        kind: field(t, r#""type":""#),
        action: field(t, r#""action":""#),
        uuid: field(t, r#""uuid":""#),
        state: field(t, r#""state":""#),
    })
}

/// What one client saw: (action uuid, final?, arrival).
type Seen = Vec<(Uuid, bool, Instant)>;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn summary(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    serde_json::json!({
        "samples": ms.len(),
        "p50_ms": round(percentile(&ms, 0.50)),
        "p99_ms": round(percentile(&ms, 0.99)),
        "max_ms": round(ms.last().copied().unwrap_or(f64::NAN)),
    })
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("stevedore.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let data = dir.path().join("data");
    let server =
        std::env::var("STREAM_BENCH_SERVER").unwrap_or_else(|_| env!("CARGO_BIN_EXE_stevedore").to_string());
    let mut child = Command::new(server)
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn stevedore dev");
    let pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut env = HashMap::new();
    while let Ok(Some(l)) = lines.next_line().await {
        if let Some((k, v)) = l.strip_prefix("export ").and_then(|l| l.split_once('=')) {
            env.insert(k.to_string(), v.to_string());
            if k == "STEVEDORE_APIKEY" {
                break;
            }
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let (url, user, key) = (
        env["STEVEDORE_URL"].clone(),
        env["STEVEDORE_USER"].clone(),
        env["STEVEDORE_APIKEY"].clone(),
    );
    let http = reqwest::Client::new();
    let post = |path: String, body: Option<&'static str>| {
        let req = http
            .request(Method::POST, format!("{url}{path}"))
            .basic_auth(&user, Some(&key))
            .header("Content-Type", "application/json")
            .body(body.unwrap_or(""));
        async move {
            let resp = req.send().await.expect("request");
            assert!(resp.status().is_success(), "{}", resp.status());
            resp.json::<serde_json::Value>().await.expect("json")
        }
    };

    // One service per action, created before the clients connect.
    let mut services = vec![];
    for _ in 0..a.actions {
        let svc = post("/api/app/v1/service/".into(), Some(r#"{"name":"bench"}"#)).await;
        services.push(svc["uuid"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = rss_kib(pid);

    // Connect the clients (at most 200 handshakes at a time).
    let ws_url = format!("{}/api/audit/v1/events", url.replacen("http://", "ws://", 1));
    let basic = stevedore_core::auth::basic_authorization(&user, &key);
    let started_connecting = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    let mut connecting = vec![];
    for _ in 0..a.clients {
        let (ws_url, basic, gate) = (ws_url.clone(), basic.clone(), gate.clone());
        connecting.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let mut req = ws_url.into_client_request().unwrap();
            req.headers_mut().insert("Authorization", basic.parse().unwrap());
            let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
            let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), false)
                .await
                .expect("connect");
            // The auth frame.
            match ws.next().await {
                Some(Ok(Message::Text(_))) => {}
                other => panic!("expected the auth frame, got {other:?}"),
            }
            ws
        }));
    }
    let mut sockets = vec![];
    for c in connecting {
        sockets.push(c.await.expect("client"));
    }
    let connect_s = started_connecting.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected = rss_kib(pid);

    // Each client reads until it has seen every action's final update, or
    // gives up 60 s after the last submission is due.
    let total = a.actions;
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(total as f64 / a.rate + 60.0);
    let mut readers = vec![];
    for mut ws in sockets {
        readers.push(tokio::spawn(async move {
            let mut seen: Seen = Vec::with_capacity(total * 2);
            let mut finals = 0;
            let mut dropped = false;
            let give_up = tokio::time::sleep_until(deadline);
            tokio::pin!(give_up);
            while finals < total {
                let m = tokio::select! {
                    biased;
                    m = ws.next() => m,
                    _ = &mut give_up => None,
                };
                match m {
                    Some(Ok(Message::Text(t))) => {
                        let now = Instant::now();
                        let f = scan(t.as_str());
                        if f.kind == "error" {
                            dropped = true;
                            break;
                        }
                        if f.kind != "action" {
                            continue;
                        }
                        let Ok(uuid) = Uuid::parse_str(f.uuid) else {
                            continue;
                        };
                        match f.action {
                            "create" => seen.push((uuid, false, now)),
                            "update" if f.state == "Success" => {
                                seen.push((uuid, true, now));
                                finals += 1;
                            }
                            _ => {}
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => {
                        dropped = true;
                        break;
                    }
                }
            }
            (seen, dropped)
        }));
    }

    // Submit the actions at the given rate.
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / a.rate);
    let mut submits = vec![];
    for (i, svc) in services.iter().enumerate() {
        tokio::time::sleep_until((started + interval * i as u32).into()).await;
        let p = post(format!("/api/app/v1/service/{svc}/noop/"), None);
        submits.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let action = p.await;
            (Uuid::parse_str(action["uuid"].as_str().unwrap()).unwrap(), t0)
        }));
    }
    let mut sent: HashMap<Uuid, Instant> = HashMap::new();
    for s in submits {
        let (uuid, t0) = s.await.unwrap();
        sent.insert(uuid, t0);
    }
    let rss_during = rss_kib(pid);

    let mut create_ms = vec![];
    let mut final_ms = vec![];
    let mut dropped = 0;
    let mut delivered = 0usize;
    for r in readers {
        let (seen, was_dropped) = r.await.unwrap();
        dropped += was_dropped as usize;
        for (uuid, is_final, at) in seen {
            let Some(t0) = sent.get(&uuid) else { continue };
            delivered += 1;
            let ms = at.saturating_duration_since(*t0).as_secs_f64() * 1000.0;
            if is_final {
                final_ms.push(ms);
            } else {
                create_ms.push(ms);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rss_after = rss_kib(pid);
    let out = serde_json::json!({
        "clients": a.clients,
        "actions": a.actions,
        "rate_per_s": a.rate,
        "connect_s": round(connect_s),
        "run_s": round(elapsed),
        "action_frames_delivered": delivered,
        "clients_disconnected": dropped,
        "create_event_latency": summary(create_ms),
        "success_event_latency": summary(final_ms),
        "server_rss_mib": {
            "idle": round(rss_idle as f64 / 1024.0),
            "connected": round(rss_connected as f64 / 1024.0),
            "during": round(rss_during as f64 / 1024.0),
            "after": round(rss_after as f64 / 1024.0),
        },
        "server_kib_per_client": round(
            (rss_connected.saturating_sub(rss_idle)) as f64 / a.clients.max(1) as f64
        ),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
    let _ = child.start_kill();
}
