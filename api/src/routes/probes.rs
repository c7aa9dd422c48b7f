//! Probes: `/healthz` (the process answers), `/readyz` (its database and
//! broker answer), and the credential probes the clients call
//! (`GET /auth/`, `/api/v1/auth/`, `/api/audit/v1/auth/`).

use crate::auth::Caller;
use crate::ApiState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use stevedore_core::broker::DynBroker;
use stevedore_core::dispatch::Dispatcher;
use stevedore_core::store::DynStore;
use tokio::time::Instant;

/// How long one readiness check answers every `/readyz`: however many
/// probes arrive (kubelets, load balancers, a careless script), a process
/// pings its database and opens a broker channel at most once per period.
pub const READINESS_TTL: Duration = Duration::from_secs(1);

/// Longest one check waits for the database or the broker before it
/// reports it unavailable.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What one check found: `Ok` or the reason, per dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The database.
    pub database: Result<(), String>,
    /// The broker.
    pub broker: Result<(), String>,
}

/// The process's last readiness check, shared by every `/readyz` for
/// [`READINESS_TTL`]. Probes that arrive while a check runs wait for it
/// rather than start their own.
#[derive(Clone, Default)]
pub struct Readiness {
    last: Arc<tokio::sync::Mutex<Option<(Instant, Checked)>>>,
}

impl Readiness {
    /// The last check if it is recent, else a new one.
    pub async fn check(&self, store: &DynStore, broker: &DynBroker) -> Checked {
        let mut last = self.last.lock().await;
        if let Some((at, checked)) = last.as_ref() {
            if at.elapsed() < READINESS_TTL {
                return checked.clone();
            }
        }
        let (database, broker) = tokio::join!(
            within(CHECK_TIMEOUT, store.ping()),
            within(CHECK_TIMEOUT, broker.ping())
        );
        let checked = Checked { database, broker };
        *last = Some((Instant::now(), checked.clone()));
        checked
    }
}

async fn within(
    limit: Duration,
    check: impl std::future::Future<Output = stevedore_core::Result<()>>,
) -> Result<(), String> {
    match tokio::time::timeout(limit, check).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

/// `GET /healthz`: always 200 while the process serves.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: see [`answer`] (the pings answered from [`Readiness`]:
/// at most one check per [`READINESS_TTL`]).
pub async fn readyz(State(state): State<ApiState>) -> axum::response::Response {
    let checked = state
        .readiness
        .check(state.dispatcher.store(), state.dispatcher.broker())
        .await;
    answer(&checked, &state.dispatcher)
}

/// Every role's `/readyz` answer: 200 when the store and the broker
/// answered the last check and no condition of the process's
/// [`Health`](stevedore_core::health::Health) makes it unready, 503
/// otherwise. The body names each check and every condition
/// (`conditions`: a worker holding jobs through a database outage, a broker
/// that blocked publishing), so an operator reads why. The conditions are
/// in memory: read on every call.
pub fn answer(checked: &Checked, dispatcher: &Dispatcher) -> axum::response::Response {
    let mut conditions = dispatcher.health().snapshot();
    if let Some(why) = dispatcher.broker().blocked() {
        // Submissions are still answered (their jobs wait in the outbox):
        // reported, not unready.
        conditions.insert(
            "broker_blocked",
            stevedore_core::health::Condition {
                message: why,
                unready: false,
            },
        );
    }
    let ready = checked.database.is_ok() && checked.broker.is_ok() && !conditions.values().any(|c| c.unready);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let show = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.clone(),
    };
    let conditions: serde_json::Map<String, serde_json::Value> = conditions
        .into_iter()
        .map(|(name, c)| (name.to_string(), json!(c.message)))
        .collect();
    (
        status,
        Json(json!({
            "database": show(&checked.database),
            "broker": show(&checked.broker),
            "conditions": conditions,
        })),
    )
        .into_response()
}

/// `GET /auth/` and friends: 200 with who you are, 401 otherwise. The tutum
/// CLI calls this before every command and needs a JSON object back.
pub async fn auth_probe(caller: Caller) -> impl IntoResponse {
    Json(json!({ "user": caller.user, "namespaces": caller.namespaces, "admin": caller.admin }))
}
