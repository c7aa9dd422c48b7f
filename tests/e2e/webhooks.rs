//! Webhooks end to end: created through the API, delivered by the real
//! binary's workers to a local receiver, signed, filtered, retried, kept
//! across a killed worker, isolated per tenant and per receiver, and
//! refused on private networks unless allowed.

use crate::support::deployment::{exports, Backend, Deployment, TEST_CONFIG};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use axum::Router;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a test waits for a delivery.
const DELIVERY_WAIT: Duration = Duration::from_secs(60);

/// Deliveries as the tests want them: loopback allowed (the receiver runs
/// there), quick retries, a short attempt timeout.
fn webhook_config() -> String {
    format!(
        "{TEST_CONFIG}
[webhooks]
allow_private_networks = true
timeout = \"2s\"
backoff_min = \"200ms\"
backoff_max = \"1s\"
max_attempts = 5
poll_interval = \"100ms\"
"
    )
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A local HTTP receiver. `/ok` answers 200; `/flaky` answers 500 while
/// `failures` is above zero (counting down), then 200; `/hang` never
/// answers while `hang` is set, then 200.
#[derive(Clone, Default)]
pub struct Receiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    failures: Arc<AtomicUsize>,
    hang: Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let mut r = Receiver::default();
        r.hang.store(true, Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        r.url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().route(
            "/{kind}",
            post({
                let r = r.clone();
                move |axum::extract::Path(kind): axum::extract::Path<String>,
                      headers: HeaderMap,
                      body: Bytes| {
                    let r = r.clone();
                    async move {
                        r.received.lock().unwrap().push(Received {
                            path: kind.clone(),
                            headers,
                            body,
                        });
                        match kind.as_str() {
                            "flaky" if r.failures.load(Ordering::SeqCst) > 0 => {
                                r.failures.fetch_sub(1, Ordering::SeqCst);
                                AxumStatus::INTERNAL_SERVER_ERROR
                            }
                            "hang" => {
                                while r.hang.load(Ordering::SeqCst) {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                }
                                AxumStatus::OK
                            }
                            _ => AxumStatus::OK,
                        }
                    }
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        r
    }

    /// What `/path` received so far.
    pub fn at(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `/path` received `n` requests; returns them.
    pub async fn wait_for(&self, path: &str, n: usize, d: &Deployment) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + DELIVERY_WAIT;
        loop {
            let got = self.at(path);
            if got.len() >= n {
                return got;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "/{path} received {} of {n} deliveries\n{}{}{}",
                    got.len(),
                    d.logs("dev"),
                    d.logs("worker-1"),
                    d.logs("worker-2")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Creates a webhook; its JSON (with the secret).
pub async fn create_webhook(d: &Deployment, body: Value) -> Value {
    let (status, _, json) = d
        .request(Method::POST, "/api/v1/webhook/", Some(&body.to_string()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    json
}

/// A webhook's delivery log.
pub async fn deliveries(d: &Deployment, webhook: &Value) -> Value {
    let uri = webhook["resource_uri"].as_str().unwrap();
    let (status, _, json) = d.request(Method::GET, &format!("{uri}delivery/"), None).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json
}

/// Waits until a webhook's newest delivery has `status`; the log.
async fn wait_for_log(d: &Deployment, webhook: &Value, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + DELIVERY_WAIT;
    loop {
        let log = deliveries(d, webhook).await;
        if log["objects"][0]["status"] == status {
            return log;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "no {status} delivery: {log}\n{}{}",
                d.logs("dev"),
                d.logs("worker-1")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks the signature header independently of the product's code:
/// HMAC-SHA256 over `<t>.<body>` with the secret.
fn signature_is_valid(secret: &str, received: &Received) -> bool {
    use hmac::{Hmac, Mac};
    let header = received.headers["x-stevedore-signature"].to_str().unwrap();
    let (t, v1) = header.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let v1 = v1.strip_prefix("v1=").unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&received.body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let age = chrono::Utc::now().timestamp() - t.parse::<i64>().unwrap();
    hex == v1 && age.abs() < 300
}

async fn a_success_is_delivered_once_signed_with_the_action_json(d: &mut Deployment) {
    let rx = Receiver::start().await;
    // Created first: its own Create action (Success) predates the webhook.
    let svc = d.new_service().await;
    let hook = create_webhook(
        d,
        json!({"url": format!("{}/ok", rx.url), "states": ["Success"], "object_type": "service"}),
    )
    .await;
    let secret = hook["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{hook}");
    assert_eq!(hook["namespace"], d.user.as_str());
    // The secret is shown once.
    let uri = hook["resource_uri"].as_str().unwrap();
    let (_, _, shown) = d.request(Method::GET, uri, None).await;
    assert!(shown.get("secret").is_none(), "{shown}");
    assert_eq!(shown["states"], json!(["Success"]));

    let uuid = d.submit(&svc, "start", None).await;
    let action = d.wait_for_state(&uuid, &["Success"]).await;
    let got = rx.wait_for("ok", 1, d).await;
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body, action, "the body is the action JSON");
    assert!(signature_is_valid(&secret, &got[0]), "{:?}", got[0].headers);
    assert!(!signature_is_valid("whsec_wrong", &got[0]));
    assert_eq!(got[0].headers["content-type"], "application/json");

    let log = wait_for_log(d, &hook, "delivered").await;
    assert_eq!(log["meta"]["total_count"], 1, "{log}");
    let entry = &log["objects"][0];
    assert_eq!(entry["action_uuid"], uuid.as_str());
    assert_eq!(entry["state"], "Success");
    assert_eq!(entry["attempts"], 1);
    assert_eq!(entry["last_status_code"], 200);
    assert!(
        entry["delivered_at"].as_str().unwrap().ends_with("+0000"),
        "{entry}"
    );
    assert_eq!(
        got[0].headers["x-stevedore-delivery"],
        entry["uuid"].as_str().unwrap()
    );
    // Only the final state was wanted: one request in all.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.at("ok").len(), 1);
}

async fn filters_pick_states_object_types_and_verbs(d: &mut Deployment) {
    let rx = Receiver::start().await;
    let svc = d.new_service().await;
    let successes = create_webhook(d, json!({"url": format!("{}/ok", rx.url), "states": ["Success"]})).await;
    let failed_fails = create_webhook(
        d,
        json!({"url": format!("{}/fails", rx.url), "states": ["Failed"], "action": "fail", "object_type": "service"}),
    )
    .await;
    let nodes = create_webhook(
        d,
        json!({"url": format!("{}/nodes", rx.url), "states": ["Success", "Failed"], "object_type": "node"}),
    )
    .await;
    let started = d.submit(&svc, "start", None).await;
    let failing = d.submit(&svc, "fail", None).await;
    d.wait_for_state(&failing, &["Failed"]).await;
    // The failing action ended after the start (one object, in turn), so
    // once its delivery arrived every earlier event was matched too.
    let got = rx.wait_for("fails", 1, d).await;
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(
        (body["uuid"].as_str(), body["state"].as_str()),
        (Some(failing.as_str()), Some("Failed"))
    );
    let ok = rx.wait_for("ok", 1, d).await;
    let body: Value = serde_json::from_slice(&ok[0].body).unwrap();
    assert_eq!(body["uuid"], started.as_str());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rx.at("ok").len(),
        1,
        "the service's creation predates the webhook"
    );
    assert_eq!(rx.at("fails").len(), 1);
    assert!(rx.at("nodes").is_empty());
    assert_eq!(deliveries(d, &nodes).await["meta"]["total_count"], 0);
    assert_eq!(deliveries(d, &successes).await["meta"]["total_count"], 1);
    assert_eq!(deliveries(d, &failed_fails).await["meta"]["total_count"], 1);
}

async fn a_failing_receiver_is_retried_until_it_accepts(d: &mut Deployment) {
    let rx = Receiver::start().await;
    rx.failures.store(2, Ordering::SeqCst);
    let svc = d.new_service().await;
    let hook = create_webhook(
        d,
        json!({"url": format!("{}/flaky", rx.url), "states": ["Success"]}),
    )
    .await;
    let uuid = d.submit(&svc, "start", None).await;
    let got = rx.wait_for("flaky", 3, d).await;
    let log = wait_for_log(d, &hook, "delivered").await;
    let entry = &log["objects"][0];
    assert_eq!(entry["action_uuid"], uuid.as_str());
    assert_eq!(entry["attempts"], 3, "{entry}");
    assert_eq!(entry["last_status_code"], 200);
    // One delivery, one id on every attempt: the receiver's idempotency key.
    let ids: Vec<&str> = got
        .iter()
        .map(|r| r.headers["x-stevedore-delivery"].to_str().unwrap())
        .collect();
    assert!(
        ids.iter().all(|i| *i == entry["uuid"].as_str().unwrap()),
        "{ids:?}"
    );
    assert_eq!(got[0].body, got[2].body);
}

/// Kills the process that delivers (the dev server, or the worker) and
/// starts another on the same database.
async fn replace_the_sender(d: &mut Deployment) {
    match d.backend {
        Backend::Embedded => {
            d.kill(0).await;
            let data = d.dir.path().join("data");
            let cfg = d.config_path.to_str().unwrap().to_string();
            let lines = d
                .spawn_role(
                    "dev-2",
                    &[
                        "dev",
                        "--listen",
                        "127.0.0.1:0",
                        "--data-dir",
                        data.to_str().unwrap(),
                        "--config",
                        &cfg,
                    ],
                    "export STEVEDORE_APIKEY=",
                )
                .await;
            let ex = exports(&lines.join("\n"));
            d.url = ex["STEVEDORE_URL"].clone();
            d.key = ex["STEVEDORE_APIKEY"].clone();
        }
        Backend::PostgresRabbit => {
            d.kill(1).await;
            d.start_worker("worker-2").await;
        }
    }
}

async fn a_delivery_survives_its_worker_being_killed_mid_attempt(d: &mut Deployment) {
    let rx = Receiver::start().await;
    let svc = d.new_service().await;
    let hook = create_webhook(
        d,
        json!({"url": format!("{}/hang", rx.url), "states": ["Success"]}),
    )
    .await;
    let uuid = d.submit(&svc, "start", None).await;
    // The attempt is under way (the receiver holds it) when the worker dies.
    let first = rx.wait_for("hang", 1, d).await;
    replace_the_sender(d).await;
    rx.hang.store(false, Ordering::SeqCst);
    let got = rx.wait_for("hang", 2, d).await;
    let log = wait_for_log(d, &hook, "delivered").await;
    let entry = &log["objects"][0];
    assert_eq!(entry["action_uuid"], uuid.as_str());
    assert_eq!(log["meta"]["total_count"], 1, "{log}");
    assert!(entry["attempts"].as_i64().unwrap() >= 2, "{entry}");
    assert_eq!(
        got[1].headers["x-stevedore-delivery"],
        first[0].headers["x-stevedore-delivery"]
    );
}

async fn bad_input_is_refused_and_stores_nothing(d: &mut Deployment) {
    let url = "https://hooks.example.com/in";
    for (body, needle) in [
        (
            json!({"url": "ftp://example.com/", "states": ["Success"]}),
            "scheme",
        ),
        (
            json!({"url": "http://u:p@example.com/", "states": ["Success"]}),
            "credentials",
        ),
        (json!({"url": 5, "states": ["Success"]}), "url"),
        (json!({"states": ["Success"]}), "url is required"),
        (json!({"url": url}), "states is required"),
        (json!({"url": url, "states": []}), "at least one"),
        (json!({"url": url, "states": ["Done"]}), "Done"),
        (json!({"url": url, "states": "Success"}), "list"),
        (
            json!({"url": url, "states": ["Success"], "object_type": "spaceship"}),
            "spaceship",
        ),
        (
            json!({"url": url, "states": ["Success"], "action": "explode"}),
            "explode",
        ),
        (
            json!({"url": url, "states": ["Success"], "object_type": "node", "action": "start"}),
            "start",
        ),
        (
            json!({"url": url, "states": ["Success"], "secret": "mine"}),
            "unknown field",
        ),
        (json!(["not", "an", "object"]), "JSON object"),
    ] {
        let (status, _, json) = d
            .request(Method::POST, "/api/v1/webhook/", Some(&body.to_string()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {json}");
        let msg = json["error"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let (status, _, json) = d.request(Method::POST, "/api/v1/webhook/", Some("{oops")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    let (_, _, list) = d.request(Method::GET, "/api/v1/webhook/", None).await;
    assert_eq!(list["meta"]["total_count"], 0, "{list}");
    let (status, _, _) = d.request(Method::GET, "/api/v1/webhook/?bogus=1", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = d.request(Method::GET, "/api/v1/webhook/not-a-uuid/", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A change is checked the same way and leaves the webhook as it was.
    let hook = create_webhook(d, json!({"url": url, "states": ["Success"]})).await;
    let uri = hook["resource_uri"].as_str().unwrap();
    for body in [
        json!({"states": ["Nope"]}),
        json!({"url": "gopher://x/"}),
        json!({"namespace": "x"}),
    ] {
        let (status, _, json) = d.request(Method::PATCH, uri, Some(&body.to_string())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {json}");
    }
    let (_, _, same) = d.request(Method::GET, uri, None).await;
    assert_eq!(same["url"], url);
    assert_eq!(same["states"], json!(["Success"]));
}

async fn another_tenant_can_neither_see_nor_change_a_webhook(d: &mut Deployment) {
    let hook = create_webhook(
        d,
        json!({"url": "https://hooks.example.com/a", "states": ["Success"]}),
    )
    .await;
    let uri = hook["resource_uri"].as_str().unwrap().to_string();
    let (bob, bob_key) = d.create_user("bob").await;
    let as_bob = Some((bob.as_str(), bob_key.as_str()));
    for (method, path, body) in [
        (Method::GET, uri.clone(), None),
        (
            Method::PATCH,
            uri.clone(),
            Some(r#"{"url": "https://evil.example.com/"}"#),
        ),
        (Method::DELETE, uri.clone(), None),
        (Method::GET, format!("{uri}delivery/"), None),
    ] {
        let (status, _, json) = d.request_as(as_bob, method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {json}");
    }
    let (_, _, list) = d.request_as(as_bob, Method::GET, "/api/v1/webhook/", None).await;
    assert_eq!(list["meta"]["total_count"], 0, "{list}");
    let body = json!({"url": "https://hooks.example.com/b", "states": ["Success"], "namespace": d.user});
    let (status, _, json) = d
        .request_as(as_bob, Method::POST, "/api/v1/webhook/", Some(&body.to_string()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{json}");

    // The owner's webhook is untouched; the owner can change and delete it.
    let (_, _, mine) = d.request(Method::GET, &uri, None).await;
    assert_eq!(mine["url"], "https://hooks.example.com/a");
    let (status, _, changed) = d
        .request(
            Method::PATCH,
            &uri,
            Some(r#"{"states": ["Failed", "Canceled"], "object_type": "service", "action": "start"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["states"], json!(["Failed", "Canceled"]));
    assert_eq!(
        (changed["object_type"].as_str(), changed["action"].as_str()),
        (Some("service"), Some("start"))
    );
    let (_, _, cleared) = d.request(Method::PATCH, &uri, Some(r#"{"action": null}"#)).await;
    assert_eq!(cleared["action"], Value::Null);
    assert_eq!(cleared["object_type"], "service");
    let (status, _, _) = d.request(Method::DELETE, &uri, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = d.request(Method::GET, &uri, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn a_namespace_holds_at_most_100_webhooks(d: &mut Deployment) {
    let body = json!({"url": "https://hooks.example.com/in", "states": ["Success"]}).to_string();
    for _ in 0..100 {
        let (status, _, json) = d.request(Method::POST, "/api/v1/webhook/", Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
    }
    let (status, _, json) = d.request(Method::POST, "/api/v1/webhook/", Some(&body)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{json}");
    assert!(json["error"].as_str().unwrap().contains("remove one"), "{json}");
    let (_, _, list) = d.request(Method::GET, "/api/v1/webhook/?limit=0", None).await;
    assert_eq!(list["meta"]["total_count"], 100);
    // Another tenant has a quota of its own.
    let (bob, key) = d.create_user("bob").await;
    let (status, _, json) = d
        .request_as(Some((&bob, &key)), Method::POST, "/api/v1/webhook/", Some(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
}

/// Runs `stevedore <args>` as a client of `d`; exit code, stdout, stderr.
async fn cli(d: &Deployment, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(crate::support::deployment::bin())
        .args(args)
        .env_remove("STEVEDORE_DATABASE_URL")
        .env("NO_COLOR", "1")
        .env("STEVEDORE_URL", &d.url)
        .env("STEVEDORE_USER", &d.user)
        .env("STEVEDORE_APIKEY", &d.key)
        .env("STEVEDORE_CREDENTIALS", d.dir.path().join("no-credentials.toml"))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run stevedore");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn the_cli_adds_lists_shows_deliveries_of_and_removes_webhooks(d: &mut Deployment) {
    let rx = Receiver::start().await;
    let svc = d.new_service().await;
    let url = format!("{}/ok", rx.url);
    let (code, out, err) = cli(
        d,
        &["webhook", "add", &url, "--states", "Success", "--type", "service"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Signing secret (shown only now): whsec_"), "{out}");
    let (_, listed, _) = cli(d, &["webhook", "ls", "--json"]).await;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["url"], url.as_str());
    assert_eq!(listed[0]["object_type"], "service");
    let uuid = listed[0]["uuid"].as_str().unwrap().to_string();
    let (_, table, _) = cli(d, &["webhook", "ls"]).await;
    assert!(table.contains(&uuid) && table.contains("type=service"), "{table}");

    let action = d.submit(&svc, "start", None).await;
    rx.wait_for("ok", 1, d).await;
    let (_, _, hook) = d
        .request(Method::GET, &format!("/api/v1/webhook/{uuid}/"), None)
        .await;
    wait_for_log(d, &hook, "delivered").await;
    let (code, table, err) = cli(d, &["webhook", "deliveries", &uuid]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        table.contains(&action) && table.contains("delivered") && table.contains("HTTP 200"),
        "{table}"
    );

    let (code, out, err) = cli(d, &["webhook", "add", "ftp://example.com/"]).await;
    assert_eq!(code, 3, "{out}");
    assert!(err.contains("scheme"), "{err}");
    let (code, _, err) = cli(d, &["webhook", "rm", "not-a-uuid"]).await;
    assert_eq!(code, 3);
    assert!(err.contains("not a webhook uuid"), "{err}");
    let (code, out, _) = cli(d, &["webhook", "rm", &uuid]).await;
    assert_eq!(code, 0);
    assert!(out.contains("Removed webhook"), "{out}");
    let (_, listed, _) = cli(d, &["webhook", "ls", "--json"]).await;
    assert_eq!(listed.trim(), "[]");
    let (code, _, err) = cli(d, &["webhook", "deliveries", &uuid]).await;
    assert_eq!(code, 3);
    assert!(err.contains("not found"), "{err}");
    for args in [
        &["webhook", "--help"][..],
        &["webhook", "add", "--help"][..],
        &["webhook", "ls", "--help"][..],
        &["webhook", "rm", "--help"][..],
        &["webhook", "deliveries", "--help"][..],
    ] {
        let (code, out, _) = cli(d, args).await;
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains("Usage: stevedore webhook"), "{args:?}: {out}");
    }
}

on_both_backends!(config = webhook_config;
    the_cli_adds_lists_shows_deliveries_of_and_removes_webhooks,
    a_success_is_delivered_once_signed_with_the_action_json,
    filters_pick_states_object_types_and_verbs,
    a_failing_receiver_is_retried_until_it_accepts,
    a_delivery_survives_its_worker_being_killed_mid_attempt,
    bad_input_is_refused_and_stores_nothing,
    another_tenant_can_neither_see_nor_change_a_webhook,
    a_namespace_holds_at_most_100_webhooks,
);

/// A receiver that hangs holds only its own webhook's slots.
mod slow_receivers {
    use super::*;

    /// Two delivery slots, one per webhook, and an attempt timeout far
    /// longer than the test.
    fn config() -> String {
        format!(
            "{TEST_CONFIG}
[webhooks]
allow_private_networks = true
timeout = \"120s\"
concurrency = 2
per_webhook = 1
poll_interval = \"100ms\"
"
        )
    }

    async fn a_hanging_receiver_does_not_delay_another_webhook(d: &mut Deployment) {
        let rx = Receiver::start().await;
        let services = d.new_services(3).await;
        create_webhook(
            d,
            json!({"url": format!("{}/hang", rx.url), "states": ["Success"]}),
        )
        .await;
        let fast = create_webhook(d, json!({"url": format!("{}/ok", rx.url), "states": ["Success"]})).await;
        for svc in &services {
            d.submit(svc, "start", None).await;
        }
        // All three reach the other receiver while the first request to
        // the hanging one is still unanswered.
        rx.wait_for("ok", 3, d).await;
        assert_eq!(rx.at("hang").len(), 1, "one slot for the hanging webhook");
        assert_eq!(deliveries(d, &fast).await["objects"][2]["status"], "delivered");
        rx.hang.store(false, Ordering::SeqCst);
        rx.wait_for("hang", 3, d).await;
    }

    on_both_backends!(config = config; a_hanging_receiver_does_not_delay_another_webhook);
}

/// Without an allowance, deliveries to private networks are refused.
mod private_networks {
    use super::*;

    fn config() -> String {
        format!(
            "{TEST_CONFIG}
[webhooks]
max_attempts = 1
poll_interval = \"100ms\"
"
        )
    }

    async fn a_delivery_to_a_private_address_is_refused_and_sends_nothing(d: &mut Deployment) {
        let rx = Receiver::start().await;
        let port = rx.url.rsplit(':').next().unwrap().to_string();
        let svc = d.new_service().await;
        let literal =
            create_webhook(d, json!({"url": format!("{}/ok", rx.url), "states": ["Success"]})).await;
        let named = create_webhook(
            d,
            json!({"url": format!("http://localhost:{port}/ok"), "states": ["Success"]}),
        )
        .await;
        d.submit(&svc, "start", None).await;
        for hook in [&literal, &named] {
            let log = wait_for_log(d, hook, "failed").await;
            let entry = &log["objects"][0];
            let error = entry["last_error"].as_str().unwrap();
            assert!(error.contains("refused to connect"), "{entry}");
            assert!(error.contains("allow_private_networks"), "{entry}");
            assert!(
                !error.contains("127.0.0.1"),
                "the address stays in the worker's log: {entry}"
            );
            assert_eq!(entry["last_status_code"], Value::Null);
        }
        assert!(rx.at("ok").is_empty(), "nothing was sent");
    }

    on_both_backends!(config = config; a_delivery_to_a_private_address_is_refused_and_sends_nothing);
}
