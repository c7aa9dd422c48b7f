//! What every role serves for its operators: `/healthz`, `/readyz`,
//! `/metrics` (Prometheus text format) and `/openapi.json`, and the layers
//! every HTTP listener runs (request id, request span, latency histogram).
//!
//! - [`install_metrics`]: the process's one metrics recorder (installed on
//!   first use; the exporter opens no listener of its own).
//! - [`layers`]: `x-request-id` (kept when the client sends one, else a new
//!   uuid; echoed on the response, and in the body of a server error), a
//!   `request` span carrying it (and the `action` a request created), and
//!   `stevedore_http_request_duration_seconds`.
//! - [`ops_router`]: `/metrics` and `/openapi.json` for a role's router.
//! - [`worker_router`]: the worker's optional ops listener.

use crate::openapi::{self, Part};
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use stevedore_core::config::Operations;
use stevedore_core::dispatch::Dispatcher;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

/// Histogram of HTTP request latency by method and status code.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "stevedore_http_request_duration_seconds";
/// Gauge: jobs waiting in the jobs queue (sampled when `/metrics` is scraped).
pub const JOBS_QUEUE_DEPTH: &str = "stevedore_jobs_queue_depth";
/// Gauge: outbox rows committed but not yet confirmed by the broker (sampled
/// when `/metrics` is scraped; capped at [`OUTBOX_SAMPLE_CAP`]).
pub const OUTBOX_BACKLOG: &str = "stevedore_outbox_backlog";
/// Gauge: stream clients (websockets and event streams) connected to this
/// process's stream hub.
pub const WEBSOCKET_CLIENTS: &str = "stevedore_websocket_clients";
/// Gauge: of those, the Server-Sent Events clients (`stream::sse`).
pub const EVENT_STREAM_CLIENTS: &str = "stevedore_event_stream_clients";
/// Counter: times the stream hub waited out a missing event (lost or crossed
/// update, or a sequence number no event took) and sent its clients to the
/// store (`stream::sequencer`).
pub const STREAM_SEQUENCE_GAPS: &str = "stevedore_stream_sequence_gaps_total";
/// Gauge: HTTP connections this listener's process is serving.
pub const HTTP_CONNECTIONS: &str = "stevedore_http_connections";
/// Gauge: live workers in the workers registry (sampled when `/metrics` is scraped).
pub const WORKERS_LIVE: &str = "stevedore_workers_live";
/// Gauge: actions the live workers reported running at their last heartbeat
/// (sampled when `/metrics` is scraped).
pub const WORKERS_RUNNING_ACTIONS: &str = "stevedore_workers_running_actions";
/// Most outbox rows a scrape counts.
pub const OUTBOX_SAMPLE_CAP: i64 = 10_000;
/// Longest a scrape waits for the broker or the database.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Histogram buckets (seconds) of every `*_seconds` metric: 0.25 ms to 10
/// min (a batch's commit or a publish confirm takes a few milliseconds).
const BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// The request id header.
pub const REQUEST_ID: &str = "x-request-id";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's Prometheus recorder (once; later calls return the
/// same handle). Roles call it at start so nothing recorded earlier is lost.
pub fn install_metrics() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .expect("histogram buckets are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        stevedore_core::dispatch::ACTIONS_TOTAL,
        "Action state changes recorded, by state and action name"
    );
    describe_histogram!(
        "stevedore_action_duration_seconds",
        Unit::Seconds,
        "Action run time in the worker, from claim to final state"
    );
    describe_counter!(
        "stevedore_action_retries_total",
        "Automatic retries of temporary failures, by action name"
    );
    describe_counter!(
        "stevedore_lease_expiries_total",
        "Expired worker leases handled by the reaper, by outcome"
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "HTTP request latency, by method and status code"
    );
    describe_histogram!(
        stevedore_core::dispatch::SUBMIT_BATCH_SIZE,
        "Actions per submission batch (one transaction)"
    );
    describe_histogram!(
        stevedore_core::dispatch::SUBMIT_WAIT_SECONDS,
        Unit::Seconds,
        "Time a submission waited for its batch to start"
    );
    describe_histogram!(
        stevedore_core::dispatch::SUBMIT_COMMIT_SECONDS,
        Unit::Seconds,
        "A submission batch's transaction, begin to commit"
    );
    describe_histogram!(
        stevedore_core::dispatch::SUBMIT_CONFIRM_SECONDS,
        Unit::Seconds,
        "A submission batch's job publish, until the broker confirmed it"
    );
    describe_histogram!(
        "stevedore_finish_batch_size",
        "Final writes per worker finisher batch (one transaction)"
    );
    describe_histogram!(
        "stevedore_finish_commit_seconds",
        Unit::Seconds,
        "A worker finisher batch's transaction, begin to commit"
    );
    describe_gauge!(JOBS_QUEUE_DEPTH, "Jobs waiting in the jobs queue");
    describe_gauge!(OUTBOX_BACKLOG, "Outbox rows not yet confirmed by the broker");
    describe_gauge!(
        WEBSOCKET_CLIENTS,
        "Stream clients (websockets and event streams) connected to this process"
    );
    describe_gauge!(
        EVENT_STREAM_CLIENTS,
        "Server-Sent Events clients connected to this process"
    );
    describe_gauge!(WORKERS_LIVE, "Live workers in the workers registry");
    describe_gauge!(
        WORKERS_RUNNING_ACTIONS,
        "Actions the live workers ran at their last registry heartbeat"
    );
    describe_counter!(
        STREAM_SEQUENCE_GAPS,
        "Missing events the stream hub waited out, sending its clients to the store"
    );
    describe_gauge!(HTTP_CONNECTIONS, "HTTP connections this process is serving");
}

/// Wraps a role's whole router: request id, request span, latency
/// histogram, and the request id in server errors' bodies
/// ([`crate::error::server_errors`]). Apply once, outermost, per listener.
pub fn layers(router: Router) -> Router {
    install_metrics();
    let x_request_id = HeaderName::from_static(REQUEST_ID);
    router
        .layer(axum::middleware::from_fn(track_latency))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        // Between the two: it reads the id the response was given.
        .layer(axum::middleware::map_response(crate::error::server_errors))
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
}

fn request_span(req: &Request) -> tracing::Span {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %id,
        action = tracing::field::Empty,
    )
}

/// Records the uuid of the action a request created or addressed on its
/// `request` span (so it is on every log line of the request).
pub fn record_action(uuid: &uuid::Uuid) {
    tracing::Span::current().record("action", tracing::field::display(uuid));
}

async fn track_latency(req: Request, next: Next) -> Response {
    let method = method_label(req.method());
    let started = Instant::now();
    let resp = next.run(req).await;
    metrics::histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        "method" => method,
        "status" => resp.status().as_u16().to_string()
    )
    .record(started.elapsed().as_secs_f64());
    resp
}

/// Standard methods by name; anything else is "other" (labels stay bounded).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// What `/metrics` and `/openapi.json` need.
#[derive(Clone)]
pub struct OpsState {
    /// Store + broker, sampled on scrape.
    pub dispatcher: Dispatcher,
    /// This role's OpenAPI document.
    pub openapi: Arc<serde_json::Value>,
    /// The role's last readiness check (see [`crate::routes::probes::Readiness`]).
    pub readiness: crate::routes::probes::Readiness,
}

/// `/metrics` and `/openapi.json` for a role serving `parts`.
pub fn ops_router(dispatcher: Dispatcher, ops: &Operations, parts: &[Part]) -> Router {
    install_metrics();
    let state = OpsState {
        readiness: Default::default(),
        dispatcher,
        openapi: Arc::new(openapi::document(ops, parts)),
    };
    Router::new()
        .route(openapi::METRICS, get(metrics_handler))
        .route(openapi::OPENAPI, get(openapi_handler))
        .with_state(state)
}

/// `GET /metrics`: samples the queue depth and outbox backlog, then renders
/// every metric of the process in the Prometheus text format.
pub async fn metrics_handler(State(s): State<OpsState>) -> Response {
    sample(&s.dispatcher).await;
    let handle = install_metrics();
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
        .into_response()
}

async fn sample(d: &Dispatcher) {
    match tokio::time::timeout(SAMPLE_TIMEOUT, d.broker().jobs_depth()).await {
        Ok(Ok(n)) => metrics::gauge!(JOBS_QUEUE_DEPTH).set(n as f64),
        Ok(Err(e)) => tracing::debug!(error = %e, "cannot sample the jobs queue depth"),
        Err(_) => tracing::debug!("sampling the jobs queue depth timed out"),
    }
    let unsent = d.store().unsent_outbox(Duration::ZERO, OUTBOX_SAMPLE_CAP);
    match tokio::time::timeout(SAMPLE_TIMEOUT, unsent).await {
        Ok(Ok(rows)) => metrics::gauge!(OUTBOX_BACKLOG).set(rows.len() as f64),
        Ok(Err(e)) => tracing::debug!(error = %e, "cannot sample the outbox backlog"),
        Err(_) => tracing::debug!("sampling the outbox backlog timed out"),
    }
    sample_workers(d).await;
}

/// The workers registry's gauges (one page of the largest size: workers are few).
async fn sample_workers(d: &Dispatcher) {
    let live = d.store().live_workers(crate::listing::MAX_LIMIT, 0);
    match tokio::time::timeout(SAMPLE_TIMEOUT, live).await {
        Ok(Ok(page)) => {
            let running: usize = page.items.iter().map(|w| w.running.len()).sum();
            metrics::gauge!(WORKERS_LIVE).set(page.total as f64);
            metrics::gauge!(WORKERS_RUNNING_ACTIONS).set(running as f64);
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "cannot sample the workers registry"),
        Err(_) => tracing::debug!("sampling the workers registry timed out"),
    }
}

/// `GET /openapi.json`.
pub async fn openapi_handler(State(s): State<OpsState>) -> Json<serde_json::Value> {
    Json((*s.openapi).clone())
}

/// `GET /readyz` of a role without a REST API
/// ([`crate::routes::probes::readiness`]).
pub async fn readyz(State(s): State<OpsState>) -> Response {
    let checked = s
        .readiness
        .check(s.dispatcher.store(), s.dispatcher.broker())
        .await;
    crate::routes::probes::answer(&checked, &s.dispatcher)
}

/// The worker's ops listener: `/healthz`, `/readyz`, `/metrics`,
/// `/openapi.json`; everything else is a JSON 404.
pub fn worker_router(dispatcher: Dispatcher, ops: &Operations) -> Router {
    let probes = Router::new()
        .route(openapi::HEALTHZ, get(crate::routes::probes::healthz))
        .route(openapi::READYZ, get(readyz))
        .with_state(OpsState {
            dispatcher: dispatcher.clone(),
            openapi: Arc::new(serde_json::Value::Null),
            readiness: Default::default(),
        });
    let app = probes
        .merge(ops_router(dispatcher, ops, &[Part::Probes, Part::Ops]))
        .fallback(not_found)
        .layer(axum::middleware::map_response(crate::error::json_errors));
    layers(app)
}

async fn not_found(method: Method, uri: Uri) -> crate::error::ApiError {
    crate::error::ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}
