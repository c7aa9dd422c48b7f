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
use stevedore_shared::dispatch::Dispatcher;

/// `GET /healthz`: always 200 while the process serves.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: see [`readiness`].
pub async fn readyz(State(state): State<ApiState>) -> impl IntoResponse {
    readiness(&state.dispatcher).await
}

/// Every role's readiness: 200 when the store and the broker answer and no
/// condition of the process's [`Health`](stevedore_shared::health::Health)
/// makes it unready, 503 otherwise. The body names each check and every
/// condition (`conditions`: a worker holding jobs through a database
/// outage, a broker that blocked publishing), so an operator reads why.
pub async fn readiness(dispatcher: &Dispatcher) -> (StatusCode, Json<serde_json::Value>) {
    let db = dispatcher.store().ping().await;
    let broker = dispatcher.broker().ping().await;
    let mut conditions = dispatcher.health().snapshot();
    if let Some(why) = dispatcher.broker().blocked() {
        // Submissions are still answered (their jobs wait in the outbox):
        // reported, not unready.
        conditions.insert(
            "broker_blocked",
            stevedore_shared::health::Condition {
                message: why,
                unready: false,
            },
        );
    }
    let ready = db.is_ok() && broker.is_ok() && !conditions.values().any(|c| c.unready);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let show = |r: &stevedore_shared::Result<()>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    let conditions: serde_json::Map<String, serde_json::Value> = conditions
        .into_iter()
        .map(|(name, c)| (name.to_string(), json!(c.message)))
        .collect();
    (
        status,
        Json(json!({ "database": show(&db), "broker": show(&broker), "conditions": conditions })),
    )
}

/// `GET /auth/` and friends: 200 with who you are, 401 otherwise. The tutum
/// CLI calls this before every command and needs a JSON object back.
pub async fn auth_probe(caller: Caller) -> impl IntoResponse {
    Json(json!({ "user": caller.user, "namespaces": caller.namespaces }))
}
