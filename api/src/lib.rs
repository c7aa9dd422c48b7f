//! Stevedore's HTTP API (axum).
//!
//! - [`routes`]: handlers — `actions` (audit API and its Tutum alias),
//!   `objects` (create/get objects, run operations), `probes` (health, auth).
//! - [`auth`]: the `Caller` extractor (Basic / ApiKey credentials, or the
//!   session cookie), [`credential_cache`], the recently verified ones,
//!   [`revocation`], how an ended key or session leaves every process's
//!   cache, [`auth_limit`], the limits on failures, and [`auth_failures`],
//!   their system log entries.
//! - [`client_addr`]: the client's address behind trusted proxies;
//!   [`origin`], the one rule against cross-site requests.
//! - [`request`]: what an action records about its request; [`input`], the
//!   rules every client value passes (ranges, dates, no NUL bytes).
//! - [`error`]: the one error type and the JSON error middleware.
//! - [`stream`]: the stream service (action logs, events), over websockets
//!   or Server-Sent Events.
//! - [`ops`]: metrics, request ids and request spans, the worker's ops listener.
//! - [`openapi`]: the one list of routes and the `/openapi.json` document.
//! - [`dashboard`]: the web dashboard at `/` (embedded page and script).
//! - [`server`]: the connection loop with its timeouts and caps; [`user_slots`],
//!   the per-user caps on websockets and long-polls.
//!
//! [`router`] assembles everything; [`serve`] runs it until shutdown.

pub mod auth;
pub mod auth_failures;
pub mod auth_limit;
pub mod client_addr;
pub mod credential_cache;
pub mod dashboard;
pub mod error;
pub mod geoip;
pub mod input;
pub mod listing;
pub mod openapi;
pub mod ops;
pub mod origin;
pub mod request;
pub mod revocation;
pub mod routes;
pub mod server;
pub mod stream;
pub mod user_slots;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use stevedore_core::config::{AuthSettings, HttpSettings, Operations};
use stevedore_core::dispatch::{Dispatcher, SubmitBatcher};
use stevedore_core::shutdown::Shutdown;

/// Largest request body accepted (bodies are operation parameters, not uploads).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Shared state of every handler: [`ApiParts`] behind one `Arc`, so that
/// the clone every extractor and middleware makes of it is one reference
/// count, not one per part. Read the parts through `Deref`
/// (`state.dispatcher`).
#[derive(Clone)]
pub struct ApiState(Arc<ApiParts>);

impl std::ops::Deref for ApiState {
    type Target = ApiParts;
    fn deref(&self) -> &ApiParts {
        &self.0
    }
}

impl From<ApiParts> for ApiState {
    fn from(parts: ApiParts) -> Self {
        ApiState(Arc::new(parts))
    }
}

impl ApiState {
    /// [`ApiParts::new`], shared.
    pub fn new(dispatcher: Dispatcher, ops: Arc<Operations>) -> Self {
        ApiParts::new(dispatcher, ops).into()
    }
}

/// What every handler shares; built once per process, then frozen in an
/// [`ApiState`].
pub struct ApiParts {
    /// Store + broker.
    pub dispatcher: Dispatcher,
    /// Operations and object types.
    pub ops: Arc<Operations>,
    /// The proxies whose `X-Forwarded-For` / `-Proto` are believed
    /// (see [`client_addr`]).
    pub proxies: Arc<client_addr::TrustedProxies>,
    /// The origins besides the API's own that browsers may act from
    /// (see [`origin`]).
    pub origins: Arc<origin::OriginPolicy>,
    /// Locates client IPs, when a GeoIP database is configured.
    pub geoip: Option<Arc<geoip::GeoIp>>,
    /// The process's one fan-out of broker updates: websocket clients and
    /// long-polling waiters subscribe to it. Fed once
    /// [`stream::Hub::spawn_subscriber`] runs (the roles start it).
    pub hub: stream::Hub,
    /// Group commit of submissions (see [`SubmitBatcher`]).
    pub submitter: SubmitBatcher,
    /// Recently verified credentials (see [`credential_cache`]).
    pub credentials: credential_cache::CredentialCache,
    /// How revocations made elsewhere reach this process (see [`revocation`]).
    pub revocations: revocation::Reach,
    /// How long a dashboard session lasts (`[auth] session_ttl`).
    pub session_ttl: std::time::Duration,
    /// What one request, connection or stream may hold (`[http]`).
    pub limits: Arc<HttpSettings>,
    /// Streams (websockets and event streams) open per user (capped by
    /// `limits.max_websockets_per_user`).
    pub websockets: user_slots::UserSlots,
    /// Long-polls waiting per user (capped by `limits.max_waits_per_user`).
    pub waits: user_slots::UserSlots,
    /// The last readiness check, shared by every `/readyz` for a moment.
    pub readiness: routes::probes::Readiness,
    /// Limits on failed authentication (see [`auth_limit`]).
    pub auth_limit: Arc<auth_limit::AuthLimiter>,
    /// Failed authentications in the system log (see [`auth_failures`]).
    pub auth_failures: auth_failures::FailureLog,
}

impl ApiParts {
    /// A state with no proxy trust, no GeoIP, an unfed hub, the default
    /// `[http]` limits and the default `[auth]` limits. Must be called
    /// within a Tokio runtime.
    pub fn new(dispatcher: Dispatcher, ops: Arc<Operations>) -> Self {
        Self::with_limits(dispatcher, ops, HttpSettings::default())
    }

    /// [`ApiState::new`] with the given `[http]` limits.
    pub fn with_limits(dispatcher: Dispatcher, ops: Arc<Operations>, limits: HttpSettings) -> Self {
        ApiParts {
            ops,
            proxies: Arc::default(),
            origins: Arc::default(),
            geoip: None,
            hub: stream::Hub::new(stream::CLIENT_BUFFER, limits.client_queue_bytes),
            submitter: SubmitBatcher::spawn(dispatcher.clone()),
            credentials: credential_cache::CredentialCache::default(),
            revocations: revocation::Reach::of(dispatcher.broker().as_ref()),
            session_ttl: AuthSettings::default().session_ttl,
            websockets: user_slots::UserSlots::new(
                "streams (websockets and event streams)",
                limits.max_websockets_per_user,
            ),
            waits: user_slots::UserSlots::new("long-polls", limits.max_waits_per_user),
            readiness: routes::probes::Readiness::default(),
            limits: Arc::new(limits),
            auth_limit: Arc::default(),
            auth_failures: auth_failures::FailureLog::spawn(
                dispatcher.store().clone(),
                AuthSettings::default().failure_log_window,
            ),
            dispatcher,
        }
    }

    /// This state with the failure limits, log window, session length and
    /// credential cache of `settings` (call it before anything holds the
    /// cache, such as [`revocation::spawn_listener`]).
    pub fn with_auth_settings(self, settings: &AuthSettings) -> Self {
        ApiParts {
            session_ttl: settings.session_ttl,
            credentials: credential_cache::CredentialCache::new(settings.credential_cache_ttl),
            auth_limit: Arc::new(auth_limit::AuthLimiter::new(settings)),
            auth_failures: auth_failures::FailureLog::spawn(
                self.dispatcher.store().clone(),
                settings.failure_log_window,
            ),
            ..self
        }
    }
}

/// The whole API: probes, `/metrics`, `/openapi.json` and the REST routes,
/// with the request id, request span and latency layers ([`ops::layers`]).
pub fn router(state: ApiState) -> Router {
    ops::layers(rest_router(
        state,
        &[openapi::Part::Probes, openapi::Part::Ops, openapi::Part::Rest],
    ))
}

/// The REST API with the websocket stream routes in front of it, on one
/// listener (`stevedore dev`, `stevedore api --with-stream`). Starts the
/// stream hub's subscription task, which stops on `shutdown`.
pub fn router_with_stream(state: ApiState, shutdown: &Shutdown) -> Router {
    let parts = [
        openapi::Part::Probes,
        openapi::Part::Ops,
        openapi::Part::Rest,
        openapi::Part::Stream,
    ];
    ops::layers(stream::stream_router(state.clone(), shutdown).fallback_service(rest_router(state, &parts)))
}

/// The REST routes (every mount comes from [`openapi`]), documenting `parts`
/// at `/openapi.json`; no outer layers.
fn rest_router(state: ApiState, parts: &[openapi::Part]) -> Router {
    let mut r = Router::new()
        .route(openapi::HEALTHZ, get(routes::probes::healthz))
        .route(openapi::READYZ, get(routes::probes::readyz));
    for p in openapi::AUTH_PROBES {
        r = r.route(p, get(routes::probes::auth_probe));
    }
    r = r
        .route(openapi::LOGIN, post(routes::session::login))
        .route(openapi::LOGOUT, post(routes::session::logout))
        .route(dashboard::INDEX, get(dashboard::index))
        .route(dashboard::SCRIPT, get(dashboard::script))
        .route(dashboard::STYLE, get(dashboard::style))
        .route(dashboard::ICON, get(dashboard::icon));
    for prefix in openapi::AUDIT_PREFIXES {
        r = r.route(
            &openapi::mount(prefix),
            get(routes::actions::get).post(routes::actions::post),
        );
    }
    for p in openapi::QNAP_LOG {
        r = r.route(p, get(routes::qnap::log));
    }
    for p in openapi::QNAP_LOG_EXPORT {
        r = r.route(p, get(routes::qnap::export));
    }
    for p in openapi::QNAP_EVENT {
        r = r.route(p, get(routes::qnap::events));
    }
    for p in openapi::WORKERS {
        r = r.route(p, get(routes::workers::list));
    }
    r = webhook_routes(r);
    for sub in openapi::subsystems(&state.ops) {
        r = r.route(
            &openapi::mount(&format!("/api/{sub}/v1")),
            get(routes::objects::get)
                .post(routes::objects::post)
                .patch(routes::objects::patch)
                .delete(routes::objects::delete),
        );
    }
    // Every route above answers within the request timeout (a streamed
    // export only has to start its body by then); long-polls, added after
    // the layer, wait as long as they were asked to (capped in the handler).
    r = r.layer(request_timeout(state.limits.request_timeout));
    for p in openapi::QNAP_WAIT {
        r = r.route(p, get(routes::qnap::wait));
    }
    let ops_routes = ops::ops_router(state.dispatcher.clone(), &state.ops, parts);
    r.fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            origin::refuse_cross_site,
        ))
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(axum::middleware::from_fn(auth::page_challenge))
        .with_state(state)
        .merge(ops_routes)
}

/// The webhooks API ([`routes::webhooks`]).
fn webhook_routes(mut r: Router<ApiState>) -> Router<ApiState> {
    for p in openapi::WEBHOOKS {
        r = r.route(p, get(routes::webhooks::list).post(routes::webhooks::create));
    }
    for p in openapi::WEBHOOK {
        r = r.route(
            p,
            get(routes::webhooks::get)
                .patch(routes::webhooks::patch)
                .delete(routes::webhooks::delete),
        );
    }
    for p in openapi::WEBHOOK_DELIVERIES {
        r = r.route(p, get(routes::webhooks::deliveries));
    }
    r
}

/// The request timeout layer: 503 (made JSON by [`error::json_errors`]) when
/// a handler has not answered within `limit`.
fn request_timeout(limit: std::time::Duration) -> tower_http::timeout::TimeoutLayer {
    tower_http::timeout::TimeoutLayer::with_status_code(axum::http::StatusCode::SERVICE_UNAVAILABLE, limit)
}

async fn not_found(method: Method, uri: Uri) -> error::ApiError {
    error::ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

/// Serves `router` on `listener` with the connection limits of `limits`
/// until `shutdown` fires, then finishes the requests in flight (see [`server`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: &HttpSettings,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    server::serve(listener, router, limits.into(), shutdown).await
}
