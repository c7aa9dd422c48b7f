//! Stevedore's HTTP API (axum).
//!
//! - [`routes`]: handlers — `actions` (audit API and its Tutum alias),
//!   `objects` (create/get objects, run operations), `probes` (health, auth).
//! - [`auth`]: the `Caller` extractor (Basic / ApiKey credentials).
//! - [`request`]: what an action records about its request.
//! - [`error`]: the one error type and the JSON error middleware.
//! - [`stream`]: the websocket stream service (action logs, events).
//!
//! [`router`] assembles everything; [`serve`] runs it until shutdown.

pub mod auth;
pub mod error;
pub mod geoip;
pub mod listing;
pub mod request;
pub mod routes;
pub mod stream;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use stevedore_shared::config::Operations;
use stevedore_shared::dispatch::Dispatcher;
use stevedore_shared::shutdown::Shutdown;
use tower_http::trace::TraceLayer;

/// Largest request body accepted (bodies are operation parameters, not uploads).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Shared state of every handler.
#[derive(Clone)]
pub struct ApiState {
    /// Store + broker.
    pub dispatcher: Dispatcher,
    /// Operations and object types.
    pub ops: Arc<Operations>,
    /// Take the client IP from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Locates client IPs, when a GeoIP database is configured.
    pub geoip: Option<Arc<geoip::GeoIp>>,
    /// The process's one fan-out of broker updates: websocket clients and
    /// long-polling waiters subscribe to it. Fed once
    /// [`stream::Hub::spawn_subscriber`] runs (the roles start it).
    pub hub: stream::Hub,
}

impl ApiState {
    /// A state with no proxy trust, no GeoIP and an unfed hub.
    pub fn new(dispatcher: Dispatcher, ops: Arc<Operations>) -> Self {
        ApiState {
            dispatcher,
            ops,
            trust_forwarded_for: false,
            geoip: None,
            hub: stream::Hub::new(stream::CLIENT_BUFFER),
        }
    }
}

/// The whole API.
pub fn router(state: ApiState) -> Router {
    let mut r = Router::new()
        .route("/healthz", get(routes::probes::healthz))
        .route("/readyz", get(routes::probes::readyz))
        .route("/auth", get(routes::probes::auth_probe))
        .route("/auth/", get(routes::probes::auth_probe))
        .route(
            "/api/audit/v1/{*rest}",
            get(routes::actions::get).post(routes::actions::post),
        )
        .route(
            "/api/v1/{*rest}",
            get(routes::actions::get).post(routes::actions::post),
        )
        .route("/api/v1/log", get(routes::qnap::log))
        .route("/api/v1/log/", get(routes::qnap::log))
        .route("/api/v1/log/export", get(routes::qnap::export))
        .route("/api/v1/log/export/", get(routes::qnap::export))
        .route("/api/v1/event", get(routes::qnap::events))
        .route("/api/v1/event/", get(routes::qnap::events))
        .route("/api/v1/event/wait/{kind}/{id}/{state}", get(routes::qnap::wait))
        .route("/api/v1/event/wait/{kind}/{id}/{state}/", get(routes::qnap::wait));
    let mut subsystems: Vec<String> = state
        .ops
        .types()
        .all()
        .iter()
        .map(|t| t.subsystem.clone())
        .collect();
    subsystems.sort();
    subsystems.dedup();
    for sub in subsystems {
        r = r.route(
            &format!("/api/{sub}/v1/{{*rest}}"),
            get(routes::objects::get)
                .post(routes::objects::post)
                .patch(routes::objects::patch)
                .delete(routes::objects::delete),
        );
    }
    r.fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> error::ApiError {
    error::ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

/// Serves `router` on `listener` until `shutdown` fires, then finishes the
/// requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}
