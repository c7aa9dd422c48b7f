//! Route handlers, one file per area. Handlers are thin: extract, call the
//! store or dispatcher, map the result.

pub mod actions;
pub mod objects;
pub mod probes;
pub mod qnap;
pub mod queue;
pub mod session;
pub mod webhooks;
pub mod workers;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use stevedore_core::action::Action;

/// The two headers that point a client at the action a request created.
pub fn action_uri_headers(action: &Action) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&action.resource_uri()) {
        h.insert("x-dockercloud-action-uri", v.clone());
        h.insert("x-tutum-action-uri", v);
    }
    h
}

/// `status` + action headers + a JSON body.
/// Also records the action's uuid on the request span.
pub fn with_action(status: StatusCode, action: &Action, body: serde_json::Value) -> Response {
    crate::ops::record_action(&action.uuid);
    (status, action_uri_headers(action), Json(body)).into_response()
}

/// Splits a wildcard path tail into its non-empty segments (so trailing
/// slashes are optional).
pub fn segments(rest: &str) -> Vec<&str> {
    rest.split('/').filter(|s| !s.is_empty()).collect()
}

/// Parses a uuid path segment; only canonical hyphenated uuids are accepted.
pub fn parse_uuid(s: &str) -> Result<uuid::Uuid, crate::error::ApiError> {
    if s.len() != 36 {
        return Err(crate::error::ApiError::BadRequest(format!(
            "malformed uuid {s:?}"
        )));
    }
    uuid::Uuid::parse_str(s).map_err(|_| crate::error::ApiError::BadRequest(format!("malformed uuid {s:?}")))
}
