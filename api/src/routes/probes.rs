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
use stevedore_shared::broker::DynBroker;
use stevedore_shared::store::DynStore;
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
    check: impl std::future::Future<Output = stevedore_shared::Result<()>>,
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

/// `GET /readyz`: 200 when the store and the broker answer, 503 otherwise
/// (answered from [`Readiness`]: at most one check per [`READINESS_TTL`]).
pub async fn readyz(State(state): State<ApiState>) -> axum::response::Response {
    let checked = state
        .readiness
        .check(state.dispatcher.store(), state.dispatcher.broker())
        .await;
    answer(&checked)
}

/// The `/readyz` answer for a check: 200 when both answered, else 503, with
/// each one's state.
pub fn answer(checked: &Checked) -> axum::response::Response {
    let status = if checked.database.is_ok() && checked.broker.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let show = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.clone(),
    };
    (
        status,
        Json(json!({ "database": show(&checked.database), "broker": show(&checked.broker) })),
    )
        .into_response()
}

/// `GET /auth/` and friends: 200 with who you are, 401 otherwise. The tutum
/// CLI calls this before every command and needs a JSON object back.
pub async fn auth_probe(caller: Caller) -> impl IntoResponse {
    Json(json!({ "user": caller.user, "namespaces": caller.namespaces }))
}
