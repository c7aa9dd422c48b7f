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

/// `GET /healthz`: always 200 while the process serves.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when the store and the broker answer, 503 otherwise.
pub async fn readyz(State(state): State<ApiState>) -> impl IntoResponse {
    let db = state.dispatcher.store().ping().await;
    let broker = state.dispatcher.broker().ping().await;
    let status = if db.is_ok() && broker.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let show = |r: &stevedore_shared::Result<()>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    (
        status,
        Json(json!({ "database": show(&db), "broker": show(&broker) })),
    )
}

/// `GET /auth/` and friends: 200 with who you are, 401 otherwise. The tutum
/// CLI calls this before every command and needs a JSON object back.
pub async fn auth_probe(caller: Caller) -> impl IntoResponse {
    Json(json!({ "user": caller.user, "namespaces": caller.namespaces }))
}
