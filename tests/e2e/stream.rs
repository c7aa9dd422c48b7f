//! The stream service end to end: action logs and the events stream over
//! websockets, through the real binary, on `stevedore dev` and on `stevedore
//! stream` processes with PostgreSQL + RabbitMQ.

use crate::support::deployment::{Backend, Deployment, TEST_CONFIG};
use crate::support::rabbit::close_rabbit_connections;
use crate::support::ws::{ws_connect, ws_json, ws_next, ws_until_close, Ws, WsNext};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;

/// Lines the `chatty` operation prints, in bursts of 50 with pauses, so a
/// client can connect while it runs.
const CHATTY_LINES: usize = 300;

fn config() -> String {
    format!(
        "{TEST_CONFIG}
[[operation]]
object = \"service\"
verb = \"chatty\"
exec = [\"sh\", \"-c\", \"i=1; while [ $i -le {CHATTY_LINES} ]; do echo line-$i; if [ $((i % 50)) -eq 0 ]; then sleep 0.3; fi; i=$((i+1)); done\"]
"
    )
}

on_both_backends!(
    config = config;
    logs_follow_sends_every_line_exactly_once_in_order_and_closes_at_success,
    logs_without_follow_close_after_the_backlog_and_tail_limits_it,
    events_start_with_auth_then_show_an_actions_create_and_updates,
    events_resume_after_a_reconnect_with_since,
    streams_show_only_the_callers_namespaces,
    a_stopping_server_closes_its_websockets_with_going_away,
);

/// A server told to stop (SIGTERM) closes its open streams with 1001
/// (going away), which tells a client to reconnect elsewhere; the clients
/// run on a runtime of their own, which must not cut them off first.
async fn a_stopping_server_closes_its_websockets_with_going_away(d: &mut Deployment) {
    let stream = d.stream_url().await;
    let index = d.newest_child();
    let auth = (d.user.clone(), d.key.clone());
    let auth = (auth.0.as_str(), auth.1.as_str());
    let mut sockets = Vec::new();
    for path in ["/api/audit/v1/events", "/v1/events"] {
        let mut ws = ws_connect(&stream, path, Some(auth)).await.expect(path);
        assert_eq!(ws_json(&mut ws).await["type"], "auth");
        sockets.push(ws);
    }
    let pid = d.pid(index).to_string();
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    for ws in &mut sockets {
        match ws_next(ws, Duration::from_secs(10)).await {
            WsNext::Closed(code) => assert_eq!(code, 1001),
            other => panic!("expected a close with 1001, got {other:?}"),
        }
    }
    let exited = d.wait_exit(index, crate::support::deployment::SETTLE).await;
    assert!(
        exited.is_some_and(|s| s.success()),
        "exit after SIGTERM: {exited:?}"
    );
}

/// Creates a service as `auth`'s user; returns its uuid.
pub(crate) async fn new_service_as(d: &Deployment, auth: (&str, &str)) -> String {
    let (status, _, svc) = d
        .request_as(
            Some(auth),
            Method::POST,
            "/api/app/v1/service/",
            Some(r#"{"name": "web"}"#),
        )
        .await;
    assert!(status.is_success(), "{status} {svc}");
    svc["uuid"].as_str().unwrap().to_string()
}

/// Runs `verb` on a new service of `auth`'s user; returns the action uuid.
pub(crate) async fn run_as(d: &Deployment, auth: (&str, &str), verb: &str) -> String {
    let svc = new_service_as(d, auth).await;
    let (status, _, action) = d
        .request_as(
            Some(auth),
            Method::POST,
            &format!("/api/app/v1/service/{svc}/{verb}/"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{action}");
    action["uuid"].as_str().unwrap().to_string()
}

async fn run(d: &Deployment, verb: &str) -> String {
    run_as(d, (&d.user, &d.key), verb).await
}

fn log_texts(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| {
            assert_eq!(f["type"], "log", "{f}");
            assert!(f["timestamp"].is_i64(), "{f}");
            f["log"].as_str().unwrap().to_string()
        })
        .collect()
}

fn chatty_lines() -> Vec<String> {
    (1..=CHATTY_LINES).map(|i| format!("line-{i}")).collect()
}

/// Reads log frames until `n` have arrived (the socket stays open).
async fn read_lines(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut got = vec![];
    while got.len() < n {
        got.push(ws_json(ws).await);
    }
    got
}

async fn logs_follow_sends_every_line_exactly_once_in_order_and_closes_at_success(d: &mut Deployment) {
    let stream = d.stream_url().await;
    let auth = (d.user.clone(), d.key.clone());
    let auth = (auth.0.as_str(), auth.1.as_str());
    let uuid = run(d, "chatty").await;
    // One client from the start (default tail and follow, as the CLIs send
    // them), one with the namespace segment that joins half-way: its first
    // lines come from the stored tail, the rest live.
    let mut first = ws_connect(
        &stream,
        &format!("/api/audit/v1/action/{uuid}/logs/?follow=true"),
        Some(auth),
    )
    .await
    .expect("handshake");
    let mut early = read_lines(&mut first, 100).await;
    let mut late = ws_connect(
        &stream,
        &format!(
            "/api/audit/v1/{}/action/{uuid}/logs/?follow=true&tail=300",
            d.user
        ),
        Some(auth),
    )
    .await
    .expect("handshake");
    let (rest, code) = ws_until_close(&mut first).await;
    assert_eq!(code, 1000);
    early.extend(rest);
    assert_eq!(log_texts(&early), chatty_lines());
    let (late_frames, code) = ws_until_close(&mut late).await;
    assert_eq!(code, 1000);
    assert_eq!(log_texts(&late_frames), chatty_lines());
    let done = d.wait_for_state(&uuid, &["Success", "Failed"]).await;
    assert_eq!(done["state"], "Success");

    // The Tutum path, after the end: the backlog, then close at once.
    let mut after = ws_connect(&stream, &format!("/v1/action/{uuid}/logs/"), Some(auth))
        .await
        .expect("handshake");
    let (frames, code) = ws_until_close(&mut after).await;
    assert_eq!(code, 1000);
    assert_eq!(log_texts(&frames), chatty_lines());
}

async fn logs_without_follow_close_after_the_backlog_and_tail_limits_it(d: &mut Deployment) {
    let stream = d.stream_url().await;
    let auth = (d.user.clone(), d.key.clone());
    let auth = (auth.0.as_str(), auth.1.as_str());
    let uuid = run(d, "start").await;
    d.wait_for_state(&uuid, &["Success"]).await;
    let mut ws = ws_connect(
        &stream,
        &format!("/api/audit/v1/action/{uuid}/logs/?follow=false"),
        Some(auth),
    )
    .await
    .unwrap();
    let (frames, code) = ws_until_close(&mut ws).await;
    assert_eq!(code, 1000);
    let texts = log_texts(&frames);
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert!(texts.contains(&"started".to_string()));
    assert!(frames[0]["streamType"].is_string());

    let mut ws = ws_connect(
        &stream,
        &format!("/api/audit/v1/action/{uuid}/logs/?follow=false&tail=2"),
        Some(auth),
    )
    .await
    .unwrap();
    let (tail, _) = ws_until_close(&mut ws).await;
    assert_eq!(log_texts(&tail), texts[1..].to_vec());

    // A running action: follow=false still closes right after the backlog.
    let svc = new_service_as(d, auth).await;
    let (status, _, action) = d
        .request(
            Method::POST,
            &format!("/api/app/v1/service/{svc}/sleep/"),
            Some(r#"{"seconds": 20}"#),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let sleeping = action["uuid"].as_str().unwrap().to_string();
    d.wait_for_state(&sleeping, &["In progress"]).await;
    let mut ws = ws_connect(
        &stream,
        &format!("/v1/action/{sleeping}/logs/?follow=false"),
        Some(auth),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let (_, code) = ws_until_close(&mut ws).await;
    assert_eq!(code, 1000);
    assert!(started.elapsed() < Duration::from_secs(10));

    // Bad parameters are refused at the handshake.
    let bad = ws_connect(&stream, &format!("/v1/action/{uuid}/logs/?tail=-1"), Some(auth)).await;
    assert_eq!(bad.err(), Some(400));
    let bad = ws_connect(&stream, "/v1/action/not-a-uuid/logs/", Some(auth)).await;
    assert_eq!(bad.err(), Some(400));
}

/// Reads frames until one satisfies `pred`; panics after [`crate::support::ws::WS_WAIT`].
async fn until(ws: &mut Ws, mut pred: impl FnMut(&Value) -> bool) -> Vec<Value> {
    let mut seen = vec![];
    loop {
        let f = ws_json(ws).await;
        let done = pred(&f);
        seen.push(f);
        if done {
            return seen;
        }
    }
}

/// Whether events frame `f` is the Success update of action `uuid`.
pub(crate) fn is_final_update(f: &Value, uuid: &str) -> bool {
    f["uuid"] == uuid && f["action"] == "update" && f["state"] == "Success"
}

async fn events_start_with_auth_then_show_an_actions_create_and_updates(d: &mut Deployment) {
    let stream = d.stream_url().await;
    let auth = (d.user.clone(), d.key.clone());
    let auth = (auth.0.as_str(), auth.1.as_str());
    for path in [
        "/api/audit/v1/events".to_string(),
        "/api/audit/v1/events/".to_string(),
        format!("/api/audit/v1/{}/events", d.user),
        "/v1/events".to_string(),
        "/v1/events/".to_string(),
    ] {
        let mut ws = ws_connect(&stream, &path, Some(auth)).await.expect(&path);
        let hello = ws_json(&mut ws).await;
        assert_eq!(hello["type"], "auth", "{path}: {hello}");
        assert_eq!(hello["data"]["user"], d.user.as_str());
        assert!(hello["data"]["seq"].is_i64());
    }
    let mut ws = ws_connect(&stream, "/api/audit/v1/events", Some(auth))
        .await
        .unwrap();
    assert_eq!(ws_json(&mut ws).await["type"], "auth");
    // ?user=&token= works too (browsers cannot set headers).
    let mut by_query = ws_connect(
        &stream,
        &format!("/v1/events?user={}&token={}", d.user, d.key),
        None,
    )
    .await
    .expect("query-string credentials");
    assert_eq!(ws_json(&mut by_query).await["type"], "auth");

    let uuid = run(d, "start").await;
    for socket in [&mut ws, &mut by_query] {
        let frames = until(socket, |f| is_final_update(f, &uuid)).await;
        let mine: Vec<&Value> = frames.iter().filter(|f| f["uuid"] == uuid.as_str()).collect();
        assert_eq!(mine[0]["type"], "action");
        assert_eq!(mine[0]["action"], "create");
        assert_eq!(mine[0]["resource_uri"], format!("/api/audit/v1/action/{uuid}/"));
        assert!(!mine[0]["parents"].as_array().unwrap().is_empty(), "{}", mine[0]);
        assert!(mine[0]["datetime"].as_str().unwrap().ends_with(" +0000"));
        let seqs: Vec<i64> = mine.iter().map(|f| f["seq"].as_i64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        assert_eq!(mine.last().unwrap()["state"], "Success");
    }
    // The events socket stays open (and answers pings).
    use futures::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Ping(vec![1, 2].into()))
        .await
        .unwrap();
    assert!(matches!(
        ws_next(&mut ws, Duration::from_secs(2)).await,
        WsNext::Silent
    ));
}

async fn events_resume_after_a_reconnect_with_since(d: &mut Deployment) {
    let stream = d.stream_url().await;
    let auth = (d.user.clone(), d.key.clone());
    let auth = (auth.0.as_str(), auth.1.as_str());
    let mut ws = ws_connect(&stream, "/api/audit/v1/events", Some(auth))
        .await
        .unwrap();
    let start = ws_json(&mut ws).await["data"]["seq"].as_i64().unwrap();
    let first = run(d, "noop").await;
    let frames = until(&mut ws, |f| f["uuid"] == first.as_str()).await;
    let last_seen = frames.last().unwrap()["seq"].as_i64().unwrap();
    drop(ws);

    // While disconnected: more actions.
    let mut missed = vec![];
    for _ in 0..3 {
        let u = run(d, "noop").await;
        d.wait_for_state(&u, &["Success"]).await;
        missed.push(u);
    }
    let stored = d
        .store()
        .await
        .events_after(stevedore_core::store::Scope::All, last_seen, 1000)
        .await
        .unwrap();
    let mut ws = ws_connect(&stream, &format!("/v1/events?since={last_seen}"), Some(auth))
        .await
        .unwrap();
    assert_eq!(ws_json(&mut ws).await["type"], "auth");
    let mut got = vec![];
    while got.len() < stored.len() {
        got.push(ws_json(&mut ws).await);
    }
    let seqs: Vec<i64> = got.iter().map(|f| f["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, stored.iter().map(|e| e.seq).collect::<Vec<_>>());
    for u in &missed {
        assert!(got.iter().any(|f| is_final_update(f, u)), "missed {u}");
    }
    // Then live, with nothing doubled.
    let live = run(d, "noop").await;
    let more = until(&mut ws, |f| is_final_update(f, &live)).await;
    let all: Vec<i64> = seqs
        .iter()
        .copied()
        .chain(more.iter().map(|f| f["seq"].as_i64().unwrap()))
        .collect();
    assert_eq!(all.len(), all.iter().collect::<HashSet<_>>().len(), "{all:?}");
    assert!(all.iter().all(|s| *s > start.max(last_seen)));
}

async fn streams_show_only_the_callers_namespaces(d: &mut Deployment) {
    let stream = d.stream_url().await;
    let (bob, bob_key) = d.create_user("bob").await;
    let alice = (d.user.clone(), d.key.clone());
    let alice = (alice.0.as_str(), alice.1.as_str());
    let bob = (bob.as_str(), bob_key.as_str());

    // Handshakes without or with wrong credentials are refused.
    assert_eq!(
        ws_connect(&stream, "/api/audit/v1/events", None).await.err(),
        Some(401)
    );
    assert_eq!(
        ws_connect(&stream, "/v1/events", Some((alice.0, "wrong")))
            .await
            .err(),
        Some(401)
    );
    assert_eq!(
        ws_connect(&stream, &format!("/v1/events?user={}&token=nope", alice.0), None)
            .await
            .err(),
        Some(401)
    );

    let mut bobs = ws_connect(&stream, "/api/audit/v1/events", Some(bob))
        .await
        .unwrap();
    assert_eq!(ws_json(&mut bobs).await["type"], "auth");
    let alices_action = run_as(d, alice, "start").await;
    d.wait_for_state(&alices_action, &["Success"]).await;
    // Another tenant's action logs and namespace: 404 on the handshake.
    assert_eq!(
        ws_connect(
            &stream,
            &format!("/api/audit/v1/action/{alices_action}/logs/"),
            Some(bob)
        )
        .await
        .err(),
        Some(404)
    );
    assert_eq!(
        ws_connect(&stream, &format!("/api/audit/v1/{}/events", alice.0), Some(bob))
            .await
            .err(),
        Some(404)
    );
    assert_eq!(
        ws_connect(
            &stream,
            &format!("/api/audit/v1/action/{alices_action}/logs/"),
            None
        )
        .await
        .err(),
        Some(401)
    );
    // Bob's socket shows his own action and nothing of Alice's.
    let bobs_action = run_as(d, bob, "noop").await;
    let frames = until(&mut bobs, |f| is_final_update(f, &bobs_action)).await;
    assert!(frames.iter().all(|f| f["namespace"] == "bob"), "{frames:?}");
    assert!(!frames.iter().any(|f| f["uuid"] == alices_action.as_str()));
    // Nor after a resume from the beginning.
    let mut replay = ws_connect(&stream, "/v1/events?since=0", Some(bob))
        .await
        .unwrap();
    assert_eq!(ws_json(&mut replay).await["type"], "auth");
    let frames = until(&mut replay, |f| is_final_update(f, &bobs_action)).await;
    assert!(frames.iter().all(|f| f["namespace"] == "bob"), "{frames:?}");
}

// --- PostgreSQL + RabbitMQ only -------------------------------------------

/// Two `stevedore stream` processes and two workers: a client on either
/// instance sees every update, whichever worker ran the action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stream_instances_see_updates_from_two_workers() {
    let mut d = Deployment::start_with(Backend::PostgresRabbit, &config()).await;
    d.start_worker("worker-2").await;
    let s1 = d.start_stream("stream-1").await;
    let s2 = d.start_stream("stream-2").await;
    let auth = (d.user.clone(), d.key.clone());
    let auth = (auth.0.as_str(), auth.1.as_str());
    let mut e1 = ws_connect(&s1, "/api/audit/v1/events", Some(auth)).await.unwrap();
    let mut e2 = ws_connect(&s2, "/v1/events", Some(auth)).await.unwrap();
    assert_eq!(ws_json(&mut e1).await["type"], "auth");
    assert_eq!(ws_json(&mut e2).await["type"], "auth");

    let chatty = run(&d, "chatty").await;
    let mut l1 = ws_connect(&s1, &format!("/api/audit/v1/action/{chatty}/logs/"), Some(auth))
        .await
        .unwrap();
    let mut l2 = ws_connect(&s2, &format!("/v1/action/{chatty}/logs/"), Some(auth))
        .await
        .unwrap();
    let mut actions = vec![chatty.clone()];
    for _ in 0..10 {
        actions.push(run(&d, "start").await);
    }
    for ws in [&mut e1, &mut e2] {
        let mut pending: HashSet<String> = actions.iter().cloned().collect();
        let mut seqs = HashSet::new();
        while !pending.is_empty() {
            let f = ws_json(ws).await;
            assert!(seqs.insert(f["seq"].as_i64().unwrap()), "doubled: {f}");
            if f["state"] == "Success" {
                pending.remove(f["uuid"].as_str().unwrap());
            }
        }
    }
    for ws in [&mut l1, &mut l2] {
        let (frames, code) = ws_until_close(ws).await;
        assert_eq!(code, 1000);
        assert_eq!(log_texts(&frames), chatty_lines());
    }
    // Both workers took part (each has a claim in its log).
    let worked = ["worker-1", "worker-2"]
        .iter()
        .filter(|w| d.logs(w).contains("action finished"))
        .count();
    assert_eq!(worked, 2, "only one worker ran actions");
}

/// The stream instance's RabbitMQ connection is closed under it: it
/// subscribes again, and its clients catch up from the store, so an events
/// client misses nothing and a logs client still gets every line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_instance_survives_losing_its_rabbitmq_connection() {
    let mut d = Deployment::start_with(Backend::PostgresRabbit, &config()).await;
    let s = d.start_stream("stream-1").await;
    let auth = (d.user.clone(), d.key.clone());
    let auth = (auth.0.as_str(), auth.1.as_str());
    let mut events = ws_connect(&s, "/api/audit/v1/events", Some(auth)).await.unwrap();
    assert_eq!(ws_json(&mut events).await["type"], "auth");
    let chatty = run(&d, "chatty").await;
    let mut logs = ws_connect(&s, &format!("/v1/action/{chatty}/logs/"), Some(auth))
        .await
        .unwrap();
    let mut lines = read_lines(&mut logs, 10).await;

    let prefix = d.prefix.clone().unwrap();
    assert!(close_rabbit_connections(&prefix, &["consume"]).await > 0);
    let after = run(&d, "start").await;

    let (rest, code) = ws_until_close(&mut logs).await;
    assert_eq!(code, 1000);
    lines.extend(rest);
    assert_eq!(log_texts(&lines), chatty_lines());
    // Either may finish first: read until both final updates arrived.
    let (mut chatty_done, mut after_done) = (false, false);
    let frames = until(&mut events, |f| {
        chatty_done |= is_final_update(f, &chatty);
        after_done |= is_final_update(f, &after);
        chatty_done && after_done
    })
    .await;
    let seqs: Vec<i64> = frames.iter().map(|f| f["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs.len(), seqs.iter().collect::<HashSet<_>>().len());
    assert!(
        d.logs("stream-1").contains("re-subscribing"),
        "{}",
        d.logs("stream-1")
    );
}
