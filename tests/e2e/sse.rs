//! The stream routes as Server-Sent Events (`Accept: text/event-stream`),
//! end to end through the real binary, on `stevedore dev` and on `stevedore
//! stream` with PostgreSQL + RabbitMQ: the websocket's frames with their
//! resume points as ids, a gapless resume from `Last-Event-ID`, the same
//! credentials, scoping, per-user cap and slow-client drop.

use crate::stream::{is_final_update, new_service_as, run_as};
use crate::support::deployment::{Deployment, TEST_CONFIG};
use crate::support::sse::{dechunk, sse_connect, sse_message, sse_until_close, Parser, Sse, SseEvent};
use crate::support::ws::{ws_connect, ws_json};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;
use stevedore_core::store::Scope;

/// Lines the `chatty` operation prints, in bursts of 50 with pauses.
const CHATTY_LINES: i64 = 300;
/// Lines the `flood` operation prints at once (of [`FLOOD_WIDTH`] bytes)
/// before it sleeps: megabytes more than a connection's buffers hold.
const FLOOD_LINES: i64 = 4000;
const FLOOD_WIDTH: usize = 2000;

fn config() -> String {
    let pad = "x".repeat(FLOOD_WIDTH);
    format!(
        "{TEST_CONFIG}
[[operation]]
object = \"service\"
verb = \"chatty\"
exec = [\"sh\", \"-c\", \"i=1; while [ $i -le {CHATTY_LINES} ]; do echo line-$i; if [ $((i % 50)) -eq 0 ]; then sleep 0.3; fi; i=$((i+1)); done\"]

[[operation]]
object = \"service\"
verb = \"flood\"
exec = [\"sh\", \"-c\", \"i=1; while [ $i -le {FLOOD_LINES} ]; do echo flood-$i-{pad}; i=$((i+1)); done; sleep 60\"]
"
    )
}

fn capped_config() -> String {
    format!("{}\n[http]\nmax_websockets_per_user = 2\n", config())
}

on_both_backends!(
    config = config;
    events_carry_their_resume_point_and_resume_from_last_event_id_without_gap_or_double,
    logs_end_at_the_final_state_and_resume_after_the_last_line_seen,
    credentials_scoping_and_origin_are_the_websockets,
    a_reader_that_stops_reading_is_dropped_and_resumes_from_its_last_id,
    progress_frames_carry_no_resume_point,
);

mod capped {
    on_both_backends!(config = capped_config; event_streams_count_against_the_per_user_stream_cap);
    use super::{capped_config, event_streams_count_against_the_per_user_stream_cap};
}

fn auth(d: &Deployment) -> (String, String) {
    (d.user.clone(), d.key.clone())
}

/// Reads messages until one's JSON satisfies `pred`.
async fn until(sse: &mut Sse, mut pred: impl FnMut(&Value) -> bool) -> Vec<SseEvent> {
    let mut seen = vec![];
    loop {
        let e = sse_message(sse).await;
        let done = pred(&e.json());
        seen.push(e);
        if done {
            return seen;
        }
    }
}

/// Every event's id is the highest `seq` sent so far: its own, as events
/// come in order.
fn assert_ids_are_seqs(events: &[SseEvent]) {
    for e in events {
        assert_eq!(e.id_number(), e.json()["seq"].as_i64().unwrap(), "{e:?}");
    }
}

async fn events_carry_their_resume_point_and_resume_from_last_event_id_without_gap_or_double(
    d: &mut Deployment,
) {
    let stream = d.stream_url().await;
    let (user, key) = auth(d);
    let auth = (user.as_str(), key.as_str());
    let mut sse = sse_connect(&stream, "/api/audit/v1/events", Some(auth), &[])
        .await
        .expect("event stream");
    let hello = sse_message(&mut sse).await;
    let data = hello.json();
    assert_eq!(data["type"], "auth", "{hello:?}");
    assert_eq!(data["data"]["user"], user.as_str());
    let start = data["data"]["seq"].as_i64().unwrap();
    assert_eq!(
        hello.id_number(),
        start,
        "the auth frame's id is where the stream starts"
    );

    let first = run_as(d, auth, "start").await;
    let seen = until(&mut sse, |f| is_final_update(f, &first)).await;
    assert_ids_are_seqs(&seen);
    let mine: Vec<Value> = seen
        .iter()
        .map(SseEvent::json)
        .filter(|f| f["uuid"] == first.as_str())
        .collect();
    assert_eq!(mine[0]["type"], "action");
    assert_eq!(mine[0]["action"], "create");
    assert_eq!(mine[0]["resource_uri"], format!("/api/audit/v1/action/{first}/"));
    let last_id = seen.last().unwrap().id_number();
    drop(sse);

    // While disconnected: more actions.
    let mut missed = vec![];
    for _ in 0..3 {
        let u = run_as(d, auth, "noop").await;
        d.wait_for_state(&u, &["Success"]).await;
        missed.push(u);
    }
    let stored: Vec<i64> = d
        .store()
        .await
        .events_after(Scope::All, last_id, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert!(!stored.is_empty());

    // The Tutum path resumes from Last-Event-ID, which wins over a stale
    // ?since= (an EventSource keeps its URL and sends the header).
    let last = last_id.to_string();
    let mut sse = sse_connect(
        &stream,
        "/v1/events?since=0",
        Some(auth),
        &[("Last-Event-ID", &last)],
    )
    .await
    .expect("resumed event stream");
    let hello = sse_message(&mut sse).await;
    assert_eq!(hello.json()["data"]["seq"], last_id);
    let mut got = vec![];
    while got.len() < stored.len() {
        got.push(sse_message(&mut sse).await);
    }
    assert_ids_are_seqs(&got);
    let seqs: Vec<i64> = got.iter().map(SseEvent::id_number).collect();
    assert_eq!(seqs, stored, "exactly the missed events, in order");
    for u in &missed {
        assert!(got.iter().any(|e| is_final_update(&e.json(), u)), "missed {u}");
    }
    // Then live, with nothing doubled.
    let live = run_as(d, auth, "noop").await;
    let more = until(&mut sse, |f| is_final_update(f, &live)).await;
    assert_ids_are_seqs(&more);
    let all: Vec<i64> = seqs
        .iter()
        .copied()
        .chain(more.iter().map(SseEvent::id_number))
        .collect();
    assert_eq!(all.len(), all.iter().collect::<HashSet<_>>().len(), "{all:?}");
    assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?}");
    assert!(all[0] > last_id);

    // ?since= alone resumes too, like the websocket's.
    let mut by_query = sse_connect(&stream, &format!("/v1/events?since={last_id}"), Some(auth), &[])
        .await
        .unwrap();
    assert_eq!(sse_message(&mut by_query).await.id_number(), last_id);
    assert_eq!(sse_message(&mut by_query).await.id_number(), stored[0]);
}

fn log_lines(events: &[SseEvent]) -> Vec<(i64, String)> {
    events
        .iter()
        .map(|e| {
            let f = e.json();
            assert_eq!(f["type"], "log", "{f}");
            assert!(f["timestamp"].is_i64(), "{f}");
            (e.id_number(), f["log"].as_str().unwrap().to_string())
        })
        .collect()
}

fn chatty(from: i64) -> Vec<(i64, String)> {
    (from..=CHATTY_LINES).map(|i| (i, format!("line-{i}"))).collect()
}

async fn logs_end_at_the_final_state_and_resume_after_the_last_line_seen(d: &mut Deployment) {
    let stream = d.stream_url().await;
    let (user, key) = auth(d);
    let auth = (user.as_str(), key.as_str());
    let uuid = run_as(d, auth, "chatty").await;
    // One client follows from the start to the final state; another reads
    // 50 lines, goes away and comes back with the last id it saw.
    let path = format!("/api/audit/v1/action/{uuid}/logs/");
    let mut whole = sse_connect(&stream, &path, Some(auth), &[]).await.unwrap();
    let mut part = sse_connect(
        &stream,
        &format!("/api/audit/v1/{user}/action/{uuid}/logs/"),
        Some(auth),
        &[],
    )
    .await
    .unwrap();
    let mut first = vec![];
    for _ in 0..50 {
        first.push(sse_message(&mut part).await);
    }
    assert_eq!(log_lines(&first), chatty(1)[..50].to_vec());
    drop(part);
    let (rest, code) = sse_until_close(&mut whole).await;
    assert_eq!(code, 1000, "closed as finished");
    assert_eq!(log_lines(&rest), chatty(1));
    assert_eq!(
        d.wait_for_state(&uuid, &["Success", "Failed"]).await["state"],
        "Success"
    );
    let mut resumed = sse_connect(&stream, &path, Some(auth), &[("Last-Event-ID", "50")])
        .await
        .unwrap();
    let (rest, code) = sse_until_close(&mut resumed).await;
    assert_eq!(code, 1000);
    assert_eq!(log_lines(&rest), chatty(51), "exactly the lines after 50");

    // The Tutum path: the tail of a finished action, then close.
    let tutum = format!("/v1/action/{uuid}/logs/");
    let mut tail = sse_connect(&stream, &format!("{tutum}?tail=5"), Some(auth), &[])
        .await
        .unwrap();
    let (lines, code) = sse_until_close(&mut tail).await;
    assert_eq!(code, 1000);
    assert_eq!(log_lines(&lines), chatty(CHATTY_LINES - 4));
    // Nothing more will come: 204, so an EventSource does not reconnect.
    let last = CHATTY_LINES.to_string();
    let done = sse_connect(&stream, &tutum, Some(auth), &[("Last-Event-ID", &last)]).await;
    assert_eq!(done.err().map(|e| e.0), Some(204));
    let done = sse_connect(&stream, &format!("{tutum}?tail=0"), Some(auth), &[]).await;
    assert_eq!(done.err().map(|e| e.0), Some(204));
    // A bad resume point is a 400 with a message.
    let bad = sse_connect(&stream, &tutum, Some(auth), &[("Last-Event-ID", "x")]).await;
    let (status, body) = bad.err().unwrap();
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("Last-Event-ID"),
        "{body}"
    );
}

async fn credentials_scoping_and_origin_are_the_websockets(d: &mut Deployment) {
    let stream = d.stream_url().await;
    let (alice, alice_key) = auth(d);
    let alice = (alice.as_str(), alice_key.as_str());
    let (bob, bob_key) = d.create_user("bob").await;
    let bob = (bob.as_str(), bob_key.as_str());
    let alices_action = run_as(d, alice, "start").await;
    d.wait_for_state(&alices_action, &["Success"]).await;
    let actions_before =
        d.request(Method::GET, "/api/audit/v1/action/", None).await.2["meta"]["total_count"].clone();

    // No or wrong credentials: 401 with a JSON error, before any stream.
    for (path, creds) in [
        ("/api/audit/v1/events".to_string(), None),
        ("/v1/events".to_string(), Some((alice.0, "wrong"))),
        (format!("/v1/action/{alices_action}/logs/"), None),
    ] {
        let (status, body) = sse_connect(&stream, &path, creds, &[]).await.err().unwrap();
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    // Its challenge prompts no browser for a password (an EventSource can
    // say nothing of who opened it).
    let resp = reqwest::Client::new()
        .get(format!("{stream}/api/audit/v1/events"))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Session realm=\"stevedore\"");
    // Another tenant's action and namespace: 404.
    for path in [
        format!("/api/audit/v1/action/{alices_action}/logs/"),
        format!("/api/audit/v1/{}/events", alice.0),
    ] {
        let (status, body) = sse_connect(&stream, &path, Some(bob), &[]).await.err().unwrap();
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body["error"].as_str().unwrap().contains("not found"), "{body}");
    }
    let bad_uuid = sse_connect(&stream, "/v1/action/not-a-uuid/logs/", Some(bob), &[]).await;
    assert_eq!(bad_uuid.err().map(|e| e.0), Some(400));
    // ?user=&token=, what a browser's EventSource can send besides a cookie.
    let mut by_query = sse_connect(
        &stream,
        &format!("/v1/events?user={}&token={}", bob.0, bob.1),
        None,
        &[],
    )
    .await
    .expect("query-string credentials");
    assert_eq!(sse_message(&mut by_query).await.json()["data"]["user"], bob.0);
    // Bob's stream shows his own action and nothing of Alice's.
    let bobs_action = run_as(d, bob, "noop").await;
    let seen = until(&mut by_query, |f| is_final_update(f, &bobs_action)).await;
    assert!(seen.iter().all(|e| e.json()["namespace"] == bob.0), "{seen:?}");
    let mut replay = sse_connect(&stream, "/v1/events", Some(bob), &[("Last-Event-ID", "0")])
        .await
        .unwrap();
    assert_eq!(sse_message(&mut replay).await.json()["type"], "auth");
    let seen = until(&mut replay, |f| is_final_update(f, &bobs_action)).await;
    assert!(seen.iter().all(|e| e.json()["namespace"] == bob.0), "{seen:?}");

    // The session cookie of POST /api/v1/login, as an EventSource sends it.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/login", d.url))
        .json(&serde_json::json!({"user": alice.0, "apikey": alice.1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let host = stream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let own_origin = format!("http://{host}");
    let mut by_cookie = sse_connect(
        &stream,
        "/api/audit/v1/events",
        None,
        &[("Cookie", &cookie), ("Origin", &own_origin)],
    )
    .await
    .expect("cookie credentials");
    assert_eq!(sse_message(&mut by_cookie).await.json()["data"]["user"], alice.0);
    let mut logs = sse_connect(
        &stream,
        &format!("/v1/action/{alices_action}/logs/"),
        None,
        &[("Cookie", &cookie)],
    )
    .await
    .unwrap();
    let (lines, code) = sse_until_close(&mut logs).await;
    assert_eq!((lines.len(), code), (3, 1000));
    // From another origin the cookie opens nothing.
    let (status, body) = sse_connect(
        &stream,
        "/api/audit/v1/events",
        None,
        &[("Cookie", &cookie), ("Origin", "https://evil.example")],
    )
    .await
    .err()
    .unwrap();
    assert_eq!(status, 403, "{body}");
    // A logged-out cookie is refused.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/logout", d.url))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let refused = sse_connect(&stream, "/api/audit/v1/events", None, &[("Cookie", &cookie)]).await;
    assert_eq!(refused.err().map(|e| e.0), Some(401));

    // None of it changed anything.
    let actions_after =
        d.request(Method::GET, "/api/audit/v1/action/", None).await.2["meta"]["total_count"].clone();
    assert_eq!(actions_before, actions_after);
}

async fn event_streams_count_against_the_per_user_stream_cap(d: &mut Deployment) {
    let stream = d.stream_url().await;
    let (user, key) = auth(d);
    let auth = (user.as_str(), key.as_str());
    let _ws = ws_connect(&stream, "/api/audit/v1/events", Some(auth))
        .await
        .expect("a websocket");
    let mut sse = sse_connect(&stream, "/api/audit/v1/events", Some(auth), &[])
        .await
        .expect("an event stream");
    assert_eq!(sse_message(&mut sse).await.json()["type"], "auth");
    // Two held: a third of either kind is refused.
    let (status, body) = sse_connect(&stream, "/v1/events", Some(auth), &[])
        .await
        .err()
        .unwrap();
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("event streams"),
        "{body}"
    );
    assert_eq!(
        ws_connect(&stream, "/v1/events", Some(auth)).await.err(),
        Some(429)
    );
    let (bob, bob_key) = d.create_user("bob").await;
    let mut bobs = sse_connect(&stream, "/v1/events", Some((&bob, &bob_key)), &[])
        .await
        .expect("another user is not affected");
    assert_eq!(sse_message(&mut bobs).await.json()["type"], "auth");
    // A closed event stream frees its slot.
    drop(sse);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match ws_connect(&stream, "/v1/events", Some(auth)).await {
            Ok(mut ws) => {
                assert_eq!(ws_json(&mut ws).await["type"], "auth");
                break;
            }
            Err(429) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(s) => panic!("a slot freed by a closed event stream was not reused: {s}"),
        }
    }
}

/// The `stevedore_event_stream_clients` gauge of a listener.
async fn event_stream_clients(base: &str) -> i64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("stevedore_event_stream_clients "))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as i64)
}

async fn a_reader_that_stops_reading_is_dropped_and_resumes_from_its_last_id(d: &mut Deployment) {
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = d.stream_url().await;
    let (user, key) = auth(d);
    let auth = (user.as_str(), key.as_str());
    let uuid = run_as(d, auth, "flood").await;
    let host = stream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();

    // A client with a small receive buffer that reads nothing after asking.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(host.parse().unwrap()).await.unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{key}"));
    let request = format!(
        "GET /v1/action/{uuid}/logs/ HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\
         Authorization: Basic {basic}\r\nLast-Event-ID: 0\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.unwrap();

    // The server drops it, by the websocket's rule, while the action runs
    // on (it sleeps after its output): the stream did not just end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut seen_open = false;
    loop {
        let n = event_stream_clients(&stream).await;
        seen_open |= n > 0;
        if seen_open && n == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow reader was never dropped (event stream clients: {n})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, _, action) = d
        .request(Method::GET, &format!("/api/audit/v1/action/{uuid}/"), None)
        .await;
    assert_eq!(action["state"], "In progress", "{action}");

    // What it was sent before it was dropped is a gapless run from line 1.
    // The body ends (its last chunk; the connection may stay open).
    let mut raw = vec![];
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), conn.read(&mut buf)).await {
            Err(_) => panic!("the dropped stream did not end ({} bytes read)", raw.len()),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
        }
        if raw.ends_with(b"\r\n0\r\n\r\n") {
            break;
        }
    }
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response headers");
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    let mut parser = Parser::default();
    parser.push(&dechunk(&raw[head_end + 4..]));
    let mut ids = vec![];
    while let Some(e) = parser.next_event() {
        if e.event == "message" && e.json()["type"] == "log" {
            ids.push(e.id_number());
        }
    }
    assert!(!ids.is_empty(), "nothing was sent before the drop");
    assert!(
        (ids.len() as i64) < FLOOD_LINES,
        "all {} lines reached a client that read nothing",
        ids.len()
    );
    let expected: Vec<i64> = (1..=ids.len() as i64).collect();
    assert_eq!(ids, expected, "a gapless run from the first line");

    // It resumes from the last id it got, as an EventSource would.
    let last = ids.len() as i64;
    let mut resumed = sse_connect(
        &stream,
        &format!("/v1/action/{uuid}/logs/"),
        Some(auth),
        &[("Last-Event-ID", &last.to_string())],
    )
    .await
    .unwrap();
    for want in last + 1..=(last + 100).min(FLOOD_LINES) {
        let e = sse_message(&mut resumed).await;
        assert_eq!(e.id_number(), want);
        assert!(
            e.json()["log"]
                .as_str()
                .unwrap()
                .starts_with(&format!("flood-{want}-")),
            "{e:?}"
        );
    }
}

/// Progress reports (the built-in `sleep` reports the share it slept) are
/// ephemeral: on both event streams they come without an `id`, so an
/// `EventSource`'s resume point stays at the last event or line.
async fn progress_frames_carry_no_resume_point(d: &mut Deployment) {
    let stream = d.stream_url().await;
    let (user, key) = auth(d);
    let auth = (user.as_str(), key.as_str());
    let mut events = sse_connect(&stream, "/api/audit/v1/events", Some(auth), &[])
        .await
        .unwrap();
    assert_eq!(sse_message(&mut events).await.json()["type"], "auth");
    let svc = new_service_as(d, auth).await;
    let (status, _, action) = d
        .request(
            Method::POST,
            &format!("/api/app/v1/service/{svc}/sleep/"),
            Some(r#"{"seconds": 3}"#),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{action}");
    let uuid = action["uuid"].as_str().unwrap().to_string();
    let mut logs = sse_connect(
        &stream,
        &format!("/api/audit/v1/action/{uuid}/logs/"),
        Some(auth),
        &[],
    )
    .await
    .unwrap();

    let seen = until(&mut events, |f| is_final_update(f, &uuid)).await;
    let (progress, rest): (Vec<&SseEvent>, Vec<&SseEvent>) =
        seen.iter().partition(|e| e.json()["action"] == "progress");
    assert!(!progress.is_empty(), "no progress report: {seen:?}");
    for p in &progress {
        assert_eq!(p.id, None, "{p:?}");
        assert_eq!(p.json()["uuid"], uuid.as_str());
    }
    for e in rest {
        assert_eq!(e.id_number(), e.json()["seq"].as_i64().unwrap(), "{e:?}");
    }

    let (frames, code) = sse_until_close(&mut logs).await;
    assert_eq!(code, 1000);
    let reports: Vec<&SseEvent> = frames.iter().filter(|e| e.json()["type"] == "progress").collect();
    assert!(!reports.is_empty(), "no progress frame: {frames:?}");
    assert!(reports.iter().all(|e| e.id.is_none()), "{reports:?}");
}
