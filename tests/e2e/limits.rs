//! Hostile and careless clients, through the real binary: half-open and
//! silent connections are closed by the header and idle timeouts while a
//! normal client is served; a user's websockets and long-polls are capped
//! (429); unbounded lists over large objects keep the API process's memory
//! under the Kubernetes limit, and their pages still chain exactly.

use crate::support::deployment::{Backend, Deployment, TEST_CONFIG};
use crate::support::ws::ws_connect;
use reqwest::{Method, StatusCode};
use std::collections::HashSet;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The memory limit of the API container (deploy/k8s/api.yaml).
const K8S_MEMORY_LIMIT: u64 = 256 * 1024 * 1024;

fn config(http: &str) -> String {
    format!("{TEST_CONFIG}\n[http]\n{http}\n")
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// Reads until the server closes the connection; `true` if it did within `limit`.
async fn closed_within(mut conn: TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let until = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(until, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or similar before the close is fine too.
            Ok(Ok(_)) => continue,
        }
    }
}

async fn half_open_and_silent_connections_are_closed(backend: Backend) {
    let (header, idle) = (Duration::from_secs(2), Duration::from_secs(3));
    let d = Deployment::start_with(
        backend,
        &config(
            r#"header_read_timeout = "2s"
idle_timeout = "3s""#,
        ),
    )
    .await;
    let addr = host_port(&d.url);
    let mut half_open = Vec::new();
    for _ in 0..400 {
        let mut c = TcpStream::connect(&addr).await.expect("connect");
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        half_open.push(c);
    }
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    // A normal client is served meanwhile.
    let (status, _, body) = d.request(Method::GET, "/api/v1/auth/", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let slack = Duration::from_secs(5);
    let closed =
        futures::future::join_all(half_open.into_iter().map(|c| closed_within(c, header + slack))).await;
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(
        open, 0,
        "{open} half-open connections outlived the header timeout"
    );
    let closed = futures::future::join_all(silent.into_iter().map(|c| closed_within(c, idle + slack))).await;
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(open, 0, "{open} silent connections outlived the idle timeout");
    let (status, _, _) = d.request(Method::GET, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
}

async fn websockets_and_long_polls_are_capped_per_user(backend: Backend) {
    let mut d = Deployment::start_with(
        backend,
        &config("max_websockets_per_user = 2\nmax_waits_per_user = 1"),
    )
    .await;
    let stream = d.stream_url().await;
    let auth = Some((d.user.as_str(), d.key.as_str()));
    let first = ws_connect(&stream, "/api/audit/v1/events", auth)
        .await
        .expect("first socket");
    let _second = ws_connect(&stream, "/api/audit/v1/events", auth)
        .await
        .expect("second socket");
    assert_eq!(
        ws_connect(&stream, "/api/audit/v1/events", auth).await.err(),
        Some(429),
        "a third websocket is refused"
    );
    let (other, other_key) = d.create_user("bob").await;
    assert!(
        ws_connect(&stream, "/api/audit/v1/events", Some((&other, &other_key)))
            .await
            .is_ok(),
        "another user is not affected"
    );
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match ws_connect(&stream, "/api/audit/v1/events", auth).await {
            Ok(_) => break,
            Err(429) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(s) => panic!("a slot freed by a closed socket was not reused: {s}"),
        }
    }

    // Long-polls: one at a time for this user.
    let svc = d.create_object("/api/app/v1/service/", r#"{"name":"w"}"#).await;
    let wait = format!(
        "/api/v1/event/wait/service/{}/Stopped?duration=",
        svc["uuid"].as_str().unwrap()
    );
    let spawn_waiter = || {
        let (url, user, key) = (d.url.clone(), d.user.clone(), d.key.clone());
        let wait = wait.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .get(format!("{url}{wait}20"))
                .basic_auth(user, Some(key))
                .send()
                .await
                .map(|r| r.status())
        })
    };
    let mut waiting = spawn_waiter();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if waiting.is_finished() {
            // Our own probe held the one slot when it arrived: wait again.
            waiting = spawn_waiter();
            continue;
        }
        let (status, _, body) = d.request(Method::GET, &format!("{wait}0"), None).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(body["error"].as_str().unwrap().contains("long-polls"), "{body}");
            break;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second long-poll was never refused"
        );
    }
    waiting.abort();
}

/// VmRSS of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Pages through `path` as the SDKs do (`offset += meta.limit`), checking
/// each envelope; returns the uuids seen.
async fn page_through(d: &Deployment, path: &str) -> Vec<String> {
    let mut uuids = Vec::new();
    let mut query = "limit=0".to_string();
    loop {
        let (status, _, page) = d.request(Method::GET, &format!("{path}?{query}"), None).await;
        assert_eq!(status, StatusCode::OK, "{path}?{query}: {page}");
        let meta = &page["meta"];
        let (limit, offset, total) = (
            meta["limit"].as_i64().unwrap(),
            meta["offset"].as_i64().unwrap(),
            meta["total_count"].as_i64().unwrap(),
        );
        let objects = page["objects"].as_array().unwrap();
        assert!(limit >= 1, "meta.limit must stay positive: {meta}");
        assert!(!objects.is_empty() || offset >= total, "{meta}");
        uuids.extend(objects.iter().map(|o| o["uuid"].as_str().unwrap().to_string()));
        match meta["next"].as_str() {
            None => {
                assert!(
                    offset + objects.len() as i64 >= total,
                    "no next before the end: {meta}"
                );
                return uuids;
            }
            Some(next) => {
                assert_eq!(
                    next,
                    format!("{path}?limit={limit}&offset={}", offset + limit),
                    "next must continue where this page ended"
                );
                assert_eq!(objects.len() as i64, limit, "{meta}");
                query = format!("limit={limit}&offset={}", offset + limit);
            }
        }
    }
}

async fn unbounded_lists_of_large_objects_stay_under_the_memory_limit(backend: Backend) {
    let d = Deployment::start(backend).await;
    let pid = d.pid(0);
    // 64 MB of rows: without the page budget, six concurrent unbounded lists
    // (each holding its rows, their wire form and the page) peaked at
    // 382 MiB on SQLite and 990 MiB on PostgreSQL in one measurement with a
    // budget of 1 GB per page.
    const OBJECTS: usize = 64;
    let filler = "x".repeat(1_000_000);
    for i in 0..OBJECTS {
        let body = format!(r#"{{"name":"big{i}","blob":"{filler}"}}"#);
        d.create_object("/api/app/v1/service/", &body).await;
    }
    let baseline = rss(pid);
    let sampling = {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss(pid));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        });
        (stop, task)
    };
    let d = std::sync::Arc::new(d);
    let clients = (0..6).map(|i| {
        let d = d.clone();
        tokio::spawn(async move {
            let path = if i % 2 == 0 {
                "/api/app/v1/service/"
            } else {
                "/api/audit/v1/action/"
            };
            let uuids = page_through(&d, path).await;
            let unique: HashSet<_> = uuids.iter().collect();
            assert_eq!(unique.len(), uuids.len(), "{path}: a row was listed twice");
            assert!(uuids.len() >= OBJECTS, "{path}: {} rows", uuids.len());
            uuids.len()
        })
    });
    for c in futures::future::join_all(clients).await {
        c.expect("client");
    }
    sampling.0.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampling.1.await.unwrap();
    assert!(
        peak < K8S_MEMORY_LIMIT,
        "API RSS peaked at {} MiB (baseline {} MiB), over the {} MiB limit",
        peak >> 20,
        baseline >> 20,
        K8S_MEMORY_LIMIT >> 20
    );
    let (status, _, _) = d.request(Method::GET, "/api/v1/auth/", None).await;
    assert_eq!(status, StatusCode::OK, "the API still serves");
}

on_both_backends!(
    backend;
    half_open_and_silent_connections_are_closed,
    websockets_and_long_polls_are_capped_per_user,
    unbounded_lists_of_large_objects_stay_under_the_memory_limit,
);
