//! The API's one error type, and the middleware that turns every error
//! response into JSON.
//!
//! **Invariant:** this file is the only place that maps domain errors to HTTP
//! statuses. Every 4xx/5xx body is `{"error": "<message>"}`, including the
//! ones axum produces itself (unknown route, wrong method, body too large,
//! malformed JSON).

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed input.
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: refused whoever asks (a cross-origin request carrying the session cookie).
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such thing (or another tenant's).
    #[error("{0}")]
    NotFound(String),
    /// 405: the resource exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 415: a body type the route does not take.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 409: not allowed in the current state.
    #[error("{0}")]
    Conflict(String),
    /// 429: the caller holds as many of something (websockets, long-polls)
    /// as they may; retry once one ends.
    #[error("{0}")]
    AtCapacity(String),
    /// 429: too many failed attempts; retry after the given time.
    #[error("{message}")]
    TooManyRequests {
        /// What to tell the client.
        message: String,
        /// When an attempt may be made again.
        retry_after: std::time::Duration,
    },
    /// 503: a dependency is down; safe to retry.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::AtCapacity(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A `Retry-After` in whole seconds: rounded up (a client that waits that
/// long is admitted), and at least 1.
pub fn retry_after_secs(d: std::time::Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

impl From<stevedore_shared::Error> for ApiError {
    fn from(e: stevedore_shared::Error) -> Self {
        use stevedore_shared::Error as E;
        match e {
            E::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            E::Transition(t) => ApiError::Conflict(t.to_string()),
            E::Conflict(m) => ApiError::Conflict(m),
            E::Invalid(m) => ApiError::BadRequest(m),
            E::Database(_) | E::Broker(_) => {
                tracing::error!(error = %e, "dependency failure");
                ApiError::Unavailable("a backing service is unavailable; retry later".into())
            }
            E::Migrate(_) | E::Config(_) | E::Internal(_) => {
                tracing::error!(error = %e, "internal error");
                ApiError::Internal("internal error".into())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            ApiError::TooManyRequests { retry_after, .. } => Some(retry_after_secs(*retry_after)),
            _ => None,
        };
        let mut resp = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"stevedore\""),
            );
        }
        resp
    }
}

/// The API's result type.
pub type ApiResult<T> = Result<T, ApiError>;

/// Largest error body re-read when wrapping a non-JSON error into JSON.
const MAX_WRAPPED_ERROR: usize = 4096;

/// Middleware: any error response that is not JSON yet (axum's own rejections)
/// is rewritten as `{"error": "..."}` with the same status.
pub async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, MAX_WRAPPED_ERROR).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).trim().to_string(),
        _ => String::new(),
    };
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this resource".to_string(),
        // Only the request timeout answers an empty 503.
        StatusCode::SERVICE_UNAVAILABLE if text.is_empty() => {
            "the request took too long and was stopped; retry later".to_string()
        }
        _ if !text.is_empty() => text,
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let body = serde_json::to_vec(&json!({ "error": message })).unwrap_or_default();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
