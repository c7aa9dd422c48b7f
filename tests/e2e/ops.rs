//! What operators rely on, through the real binary: probes, Prometheus
//! metrics, request ids, and the OpenAPI document listing every route; on
//! both backends, plus the worker's ops listener and the stream service's on
//! PostgreSQL + RabbitMQ.

use crate::support::deployment::{Backend, Deployment};
use crate::support::http::get_text;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

/// Runs "Service Start" on a new service until it succeeds; returns the
/// action's uuid.
async fn run_an_action(d: &Deployment) -> String {
    let svc = d.new_service().await;
    let uuid = d.submit(&svc, "start", None).await;
    let done = d.wait_for_state(&uuid, &["Success", "Failed"]).await;
    assert_eq!(done["state"], "Success", "{done}");
    uuid
}

async fn check_probes(base: &str) {
    let (status, _, body) = get_text(&format!("{base}/healthz"), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    // Ready once its connections are up (the stream's subscription may lag the start line).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = get_text(&format!("{base}/readyz"), &[]).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        if status == StatusCode::OK {
            assert_eq!(v["database"], "ok", "{v}");
            return;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        assert!(tokio::time::Instant::now() < deadline, "not ready: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/metrics` in the Prometheus text format; every line is a comment, blank,
/// or `name{labels} value`.
async fn scrape(base: &str) -> String {
    let (status, headers, body) = get_text(&format!("{base}/metrics"), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ct = headers["content-type"].to_str().unwrap();
    assert!(ct.starts_with("text/plain"), "{ct}");
    for line in body.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let value = line.rsplit(' ').next().unwrap();
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "not a sample: {line}"
        );
        assert!(line.starts_with("stevedore_"), "unexpected metric: {line}");
    }
    body
}

fn has_sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> bool {
    metrics.lines().any(|l| {
        l.starts_with(name)
            && l[name.len()..].starts_with(['{', ' '])
            && labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
    })
}

fn assert_sample(metrics: &str, name: &str, labels: &[(&str, &str)]) {
    assert!(
        has_sample(metrics, name, labels),
        "no {name} sample with {labels:?} in:\n{metrics}"
    );
}

/// Fetches and parses `/openapi.json` as an OpenAPI 3 document.
async fn openapi(base: &str) -> (Value, openapiv3::OpenAPI) {
    let (status, _, body) = get_text(&format!("{base}/openapi.json"), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: Value = serde_json::from_str(&body).expect("openapi.json is JSON");
    let doc: openapiv3::OpenAPI = serde_json::from_value(json.clone())
        .unwrap_or_else(|e| panic!("not an OpenAPI document: {e}\n{json}"));
    assert!(doc.openapi.starts_with("3."), "{}", doc.openapi);
    assert!(!doc.info.title.is_empty());
    (json, doc)
}

/// Every (method, path) of a document.
fn operations(doc: &openapiv3::OpenAPI) -> Vec<(String, String, Vec<String>)> {
    let mut out = vec![];
    for (path, item) in doc.paths.paths.iter() {
        let item = item.as_item().expect("inline path item");
        for (method, op) in item.iter() {
            assert!(op.operation_id.is_some(), "{method} {path}: no operationId");
            assert!(
                !op.responses.responses.is_empty(),
                "{method} {path}: no responses"
            );
            let verbs = op
                .parameters
                .iter()
                .filter_map(|p| p.as_item())
                .filter(|p| p.parameter_data_ref().name == "verb")
                .flat_map(|p| match &p.parameter_data_ref().format {
                    openapiv3::ParameterSchemaOrContent::Schema(s) => {
                        match s.as_item().map(|s| &s.schema_kind) {
                            Some(openapiv3::SchemaKind::Type(openapiv3::Type::String(st))) => {
                                st.enumeration.iter().flatten().cloned().collect::<Vec<_>>()
                            }
                            _ => vec![],
                        }
                    }
                    _ => vec![],
                })
                .collect();
            out.push((method.to_uppercase(), path.clone(), verbs));
        }
    }
    out
}

/// Requests every documented route from `base` (placeholders filled in) and
/// checks the server routes it: no "no route" 404 and no 405.
async fn every_documented_route_is_served(d: &Deployment, base: &str, doc: &openapiv3::OpenAPI) {
    let http = reqwest::Client::new();
    for (method, path, verbs) in operations(doc) {
        let url = format!(
            "{base}{}",
            path.replace("{uuid}", &Uuid::new_v4().to_string())
                .replace("{ns}", &d.user)
                .replace("{verb}", verbs.first().map(String::as_str).unwrap_or("start"))
        );
        let resp = http
            .request(Method::from_bytes(method.as_bytes()).unwrap(), &url)
            .basic_auth(&d.user, Some(&d.key))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {body}");
        assert!(
            !body.contains("no route for") && !body.contains("no such resource"),
            "{method} {path} is documented but not served: {status} {body}"
        );
    }
}

fn paths(json: &Value) -> Vec<&str> {
    json["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

// --- on both backends ---------------------------------------------------------

async fn health_and_readiness_probes_answer(d: &mut Deployment) {
    check_probes(&d.url).await;
    let (status, _, v) = d.request_as(None, Method::GET, "/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["broker"], "ok", "{v}");
}

async fn metrics_report_actions_requests_queue_and_outbox(d: &mut Deployment) {
    run_an_action(d).await;
    let m = scrape(&d.url).await;
    // The API records the submission; the final state is recorded where the
    // worker runs (the same process on the embedded backend).
    assert_sample(
        &m,
        "stevedore_actions_total",
        &[("state", "In progress"), ("action", "Service Start")],
    );
    assert_sample(
        &m,
        "stevedore_http_request_duration_seconds_bucket",
        &[("method", "POST"), ("status", "202"), ("le", "+Inf")],
    );
    // Time buckets start at 0.25 ms: batch commits and confirms take a few.
    assert_sample(
        &m,
        "stevedore_http_request_duration_seconds_bucket",
        &[("method", "POST"), ("status", "202"), ("le", "0.00025")],
    );
    assert_sample(
        &m,
        "stevedore_http_request_duration_seconds_count",
        &[("method", "GET"), ("status", "200")],
    );
    assert!(
        !m.contains("path=") && !m.contains("/api/"),
        "HTTP metrics must not be labelled by path:\n{m}"
    );
    assert_sample(&m, "stevedore_jobs_queue_depth", &[]);
    assert_sample(&m, "stevedore_outbox_backlog", &[]);
    assert!(m.contains("# TYPE stevedore_actions_total counter"), "{m}");
    assert!(
        m.contains("# TYPE stevedore_http_request_duration_seconds histogram"),
        "{m}"
    );
    if d.backend == Backend::Embedded {
        assert_sample(
            &m,
            "stevedore_actions_total",
            &[("state", "Success"), ("action", "Service Start")],
        );
        assert_sample(
            &m,
            "stevedore_action_duration_seconds_bucket",
            &[("action", "Service Start"), ("state", "Success")],
        );
        assert_sample(&m, "stevedore_websocket_clients", &[]);
    }
}

async fn openapi_document_lists_every_route_served(d: &mut Deployment) {
    let (json, doc) = openapi(&d.url).await;
    let listed = paths(&json);
    for p in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/auth/",
        "/api/v1/auth/",
        "/api/audit/v1/action/",
        "/api/audit/v1/action/{uuid}/",
        "/api/audit/v1/action/{uuid}/cancel/",
        "/api/audit/v1/{ns}/action/{uuid}/retry/",
        "/api/v1/action/{uuid}/",
        "/api/app/v1/service/",
        "/api/app/v1/service/{uuid}/",
        "/api/app/v1/{ns}/service/{uuid}/{verb}/",
        "/api/infra/v1/node/{uuid}/{verb}/",
        "/api/app/v1/stack/{uuid}/",
    ] {
        assert!(listed.contains(&p), "{p} not in {listed:?}");
    }
    let verbs = &json["paths"]["/api/app/v1/service/{uuid}/{verb}/"]["post"]["parameters"];
    let verb = verbs
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "verb")
        .unwrap();
    for v in ["start", "fail", "noop", "sleep"] {
        assert!(
            verb["schema"]["enum"]
                .as_array()
                .unwrap()
                .contains(&Value::from(v)),
            "{verb}"
        );
    }
    // The websocket routes are served (and listed) where the stream runs.
    let ws = "/api/audit/v1/action/{uuid}/logs/";
    match d.backend {
        Backend::Embedded => {
            assert!(listed.contains(&ws), "{listed:?}");
            assert!(json["paths"]["/v1/events"]["get"]["responses"]["101"].is_object());
        }
        Backend::PostgresRabbit => assert!(!listed.contains(&ws), "{listed:?}"),
    }
    every_documented_route_is_served(d, &d.url, &doc).await;
}

async fn request_ids_are_echoed_and_logged_with_the_action(d: &mut Deployment) {
    // A client's id is kept and echoed; a request without one gets a uuid.
    let (status, headers, _) = get_text(&format!("{}/healthz", d.url), &[("x-request-id", "probe-1")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-request-id"], "probe-1");
    let (_, headers, _) = get_text(&format!("{}/healthz", d.url), &[]).await;
    let made = headers["x-request-id"].to_str().unwrap();
    Uuid::parse_str(made).unwrap_or_else(|_| panic!("not a uuid: {made}"));
    // Errors carry it too.
    let (status, headers, _) = get_text(&format!("{}/nowhere", d.url), &[("x-request-id", "lost-1")]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["x-request-id"], "lost-1");

    // The request span carries the id and the action the request created.
    let svc = d
        .create_object("/api/app/v1/service/", r#"{"name": "web"}"#)
        .await;
    let request_id = format!("req-{}", Uuid::new_v4());
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/api/app/v1/service/{}/start/",
            d.url,
            svc["uuid"].as_str().unwrap()
        ))
        .basic_auth(&d.user, Some(&d.key))
        .header("x-request-id", &request_id)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["x-request-id"], request_id.as_str());
    let action: Value = resp.json().await.unwrap();
    let uuid = action["uuid"].as_str().unwrap().to_string();
    let log_name = match d.backend {
        Backend::Embedded => "dev",
        Backend::PostgresRabbit => "api",
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = d.logs(log_name);
        if log.lines().any(|l| l.contains(&request_id) && l.contains(&uuid)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log line with request id {request_id} and action {uuid}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.wait_for_state(&uuid, &["Success"]).await;
}

on_both_backends!(
    health_and_readiness_probes_answer,
    metrics_report_actions_requests_queue_and_outbox,
    openapi_document_lists_every_route_served,
    request_ids_are_echoed_and_logged_with_the_action,
);

// --- PostgreSQL + RabbitMQ: the worker's and the stream service's listeners -------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_ops_listener_serves_probes_metrics_and_openapi() {
    let mut d = Deployment::start(Backend::PostgresRabbit).await;
    // Only the worker with the listener runs jobs (children: api, worker-1).
    d.kill(1).await;
    let ops = d.start_worker_with_ops("worker-ops").await;
    check_probes(&ops).await;
    let (_, _, ready) = get_text(&format!("{ops}/readyz"), &[]).await;
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["broker"], "ok", "{ready}");

    run_an_action(&d).await;
    let m = scrape(&ops).await;
    assert_sample(
        &m,
        "stevedore_actions_total",
        &[("state", "Success"), ("action", "Service Start")],
    );
    assert_sample(
        &m,
        "stevedore_action_duration_seconds_bucket",
        &[("action", "Service Start"), ("state", "Success"), ("le", "+Inf")],
    );
    assert_sample(&m, "stevedore_jobs_queue_depth", &[]);
    assert_sample(&m, "stevedore_outbox_backlog", &[]);
    assert!(
        m.contains("# TYPE stevedore_action_duration_seconds histogram"),
        "{m}"
    );

    let (json, doc) = openapi(&ops).await;
    let mut listed = paths(&json);
    listed.sort();
    assert_eq!(listed, ["/healthz", "/metrics", "/openapi.json", "/readyz"]);
    every_documented_route_is_served(&d, &ops, &doc).await;

    let (status, headers, body) =
        get_text(&format!("{ops}/api/audit/v1/action/"), &[("x-request-id", "w-1")]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(headers["x-request-id"], "w-1");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert!(err["error"].as_str().unwrap().contains("no route"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_service_serves_probes_metrics_and_its_websocket_routes() {
    let mut d = Deployment::start(Backend::PostgresRabbit).await;
    let stream = d.start_stream("stream-1").await;
    check_probes(&stream).await;
    let mut ws = crate::support::ws::ws_connect(
        &stream,
        "/api/audit/v1/events",
        Some((&d.user.clone(), &d.key.clone())),
    )
    .await
    .expect("events socket");
    let connected = |m: &str| {
        has_sample(m, "stevedore_websocket_clients", &[]) && m.contains("stevedore_websocket_clients 1")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(&stream).await;
        if connected(&m) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "one client expected:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = ws.close(None).await;

    let (json, doc) = openapi(&stream).await;
    let listed = paths(&json);
    for p in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/api/audit/v1/events",
        "/api/audit/v1/{ns}/events/",
        "/v1/action/{uuid}/logs",
        "/api/audit/v1/{ns}/action/{uuid}/logs/",
    ] {
        assert!(listed.contains(&p), "{p} not in {listed:?}");
    }
    assert!(!listed.contains(&"/api/audit/v1/action/"), "{listed:?}");
    for (_, item) in json["paths"].as_object().unwrap() {
        if let Some(get) = item.get("get") {
            if get["tags"][0] == "stream" {
                assert!(get["responses"]["101"].is_object(), "{get}");
            }
        }
    }
    every_documented_route_is_served(&d, &stream, &doc).await;
}

/// A temporary failure (exit code 75) retried once counts one retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_counted() {
    let config = format!(
        "{}\n[[operation]]\nobject = \"service\"\nverb = \"flaky\"\naction = \"Service Flaky\"\nexec = [\"sh\", \"-c\", \"exit 75\"]\nretries = 1\n",
        crate::support::deployment::TEST_CONFIG
    );
    let d = Deployment::start_with(Backend::Embedded, &config).await;
    let svc = d.new_service().await;
    let action = d.submit(&svc, "flaky", None).await;
    let done = d.wait_for_state(&action, &["Success", "Failed"]).await;
    assert_eq!(done["state"], "Failed", "{done}");
    let m = scrape(&d.url).await;
    assert!(
        m.lines().any(|l| l.starts_with("stevedore_action_retries_total{")
            && l.contains("action=\"Service Flaky\"")
            && l.ends_with(" 1")),
        "{m}"
    );
    assert_sample(
        &m,
        "stevedore_actions_total",
        &[("state", "Failed"), ("action", "Service Flaky")],
    );
}
