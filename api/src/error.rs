//! The API's one error type, and the middlewares that turn every error
//! response into JSON.
//!
//! **Invariant:** this file is the only place that maps domain errors to HTTP
//! statuses. Every 4xx/5xx body is `{"error": "<message>"}`, including the
//! ones axum produces itself (unknown route, wrong method, body too large,
//! malformed JSON).
//!
//! The client's errors (4xx) say what was wrong with the request. A server
//! error (5xx: a bug, corrupt data, the database or the broker down) says
//! only a fixed sentence and the request's id, `{"error": "internal error",
//! "request_id": "…"}` (the id also in `x-request-id`); what failed goes to
//! the log, on one line with the same id ([`server_errors`]).

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::borrow::Cow;

/// What a client reads of a 500.
pub const INTERNAL_ERROR: &str = "internal error";
/// What a client reads of a 503 when the database or the broker failed.
pub const UNAVAILABLE: &str = "a backing service is unavailable; retry later";
/// What a client reads of a 503 when the request timed out.
const TIMED_OUT: &str = "the request took too long and was stopped; retry later";

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed input.
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: refused whoever asks (a cross-origin request carrying the session
    /// cookie), or refused to this caller (a non-admin on an operators' route).
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
    /// 503: the database or the broker failed; safe to retry. The text is
    /// the failure, for the log: the client reads [`UNAVAILABLE`].
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or corrupt data. The text is the fault, for the log: the
    /// client reads [`INTERNAL_ERROR`].
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

impl From<stevedore_core::Error> for ApiError {
    fn from(e: stevedore_core::Error) -> Self {
        use stevedore_core::Error as E;
        match e {
            E::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            E::Transition(t) => ApiError::Conflict(t.to_string()),
            E::Conflict(m) => ApiError::Conflict(m),
            E::Invalid(m) => ApiError::BadRequest(m),
            E::Database(_) | E::Broker(_) => ApiError::Unavailable(e.to_string()),
            E::Internal(_) | E::Migrate(_) | E::Config(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let public = match &self {
            ApiError::Internal(_) => Some(INTERNAL_ERROR),
            ApiError::Unavailable(_) => Some(UNAVAILABLE),
            _ => None,
        };
        if let Some(message) = public {
            return ServerError::response(status, message.into(), Some(self.to_string()));
        }
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
    if status.is_server_error() {
        // Only the request timeout answers an empty 503. Any other text of
        // a 5xx (axum's own 500s name types) is for the log.
        let message: Cow<'static, str> = match status {
            StatusCode::SERVICE_UNAVAILABLE if text.is_empty() => TIMED_OUT.into(),
            StatusCode::INTERNAL_SERVER_ERROR => INTERNAL_ERROR.into(),
            _ => status.canonical_reason().unwrap_or(INTERNAL_ERROR).into(),
        };
        let body = json!({ "error": message });
        let detail = (!text.is_empty()).then_some(text);
        parts.extensions.insert(ServerError { message, detail });
        return json_body(parts, &body);
    }
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this resource".to_string(),
        _ if !text.is_empty() => text,
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    json_body(parts, &json!({ "error": message }))
}

/// `parts` with `value` as its JSON body.
fn json_body(mut parts: axum::http::response::Parts, value: &serde_json::Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// A server error on its way out: carried in the response's extensions from
/// where the response was made to [`server_errors`], which logs `detail`
/// and answers `message` with the request's id.
#[derive(Debug, Clone)]
struct ServerError {
    /// What the client reads.
    message: Cow<'static, str>,
    /// What failed, for the log only.
    detail: Option<String>,
}

impl ServerError {
    /// A `status` response saying `message` (its body without the request
    /// id until [`server_errors`] adds it), carrying `detail` for the log.
    fn response(status: StatusCode, message: Cow<'static, str>, detail: Option<String>) -> Response {
        let mut resp = (status, Json(json!({ "error": message }))).into_response();
        resp.extensions_mut().insert(ServerError { message, detail });
        resp
    }
}

/// Middleware, between the request id layers (it reads the id the response
/// was given in `x-request-id`): a server error made by [`ApiError`] or
/// [`json_errors`] is logged with what failed and the request's id, and
/// answered `{"error": "<message>", "request_id": "<id>"}`. Any other
/// response passes untouched.
pub async fn server_errors(mut resp: Response) -> Response {
    let Some(report) = resp.extensions_mut().remove::<ServerError>() else {
        return resp;
    };
    let id = resp
        .headers()
        .get(crate::ops::REQUEST_ID)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let status = resp.status().as_u16();
    let detail = report.detail.as_deref().unwrap_or("");
    tracing::error!(request_id = %id, status, error = %detail, "{}", report.message);
    let (parts, _) = resp.into_parts();
    json_body(parts, &json!({ "error": report.message, "request_id": id }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::Router;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt;

    const SECRET: &str = "row 7 of actions: column parents is not JSON";

    /// A router as the roles build one: handlers, `json_errors`, then the
    /// request id layers.
    fn app() -> Router {
        let routes = Router::new()
            .route("/internal", get(|| async { ApiError::Internal(SECRET.into()) }))
            .route(
                "/corrupt",
                get(|| async { ApiError::from(stevedore_core::Error::Internal(SECRET.into())) }),
            )
            .route(
                "/json",
                get(|| async {
                    let e = serde_json::from_str::<u8>("nope").unwrap_err();
                    ApiError::from(stevedore_core::Error::from(e))
                }),
            )
            .route(
                "/broker",
                get(|| async { ApiError::from(stevedore_core::Error::Broker(SECRET.into())) }),
            )
            // axum's own 500s are plain text naming types.
            .route(
                "/plain",
                get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, SECRET) }),
            )
            .route(
                "/bad",
                get(|| async { ApiError::BadRequest("limit must be a number".into()) }),
            )
            .layer(axum::middleware::map_response(json_errors));
        crate::ops::layers(routes)
    }

    async fn call(path: &str, request_id: Option<&str>) -> (StatusCode, String, serde_json::Value) {
        let mut req = axum::http::Request::get(path);
        if let Some(id) = request_id {
            req = req.header(crate::ops::REQUEST_ID, id);
        }
        let resp = app().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        let header = resp.headers()[crate::ops::REQUEST_ID]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(!text.contains(SECRET), "{path}: the body names the fault: {text}");
        (status, header, serde_json::from_str(&text).unwrap())
    }

    #[tokio::test]
    async fn an_internal_error_is_a_500_with_the_request_id_and_not_the_fault() {
        for path in ["/internal", "/corrupt", "/json", "/plain"] {
            let (status, header, body) = call(path, None).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
            assert_eq!(body["error"], INTERNAL_ERROR, "{path}");
            assert!(!header.is_empty());
            assert_eq!(body["request_id"], header.as_str(), "{path}");
            assert_eq!(body.as_object().unwrap().len(), 2, "{path}: {body}");
        }
        // A client's request id is the one answered.
        let (_, header, body) = call("/internal", Some("req-42")).await;
        assert_eq!(header, "req-42");
        assert_eq!(body, json!({ "error": INTERNAL_ERROR, "request_id": "req-42" }));
    }

    #[tokio::test]
    async fn a_dependency_failure_is_a_503_with_the_request_id_and_not_the_failure() {
        let (status, header, body) = call("/broker", Some("req-43")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header, "req-43");
        assert_eq!(body, json!({ "error": UNAVAILABLE, "request_id": "req-43" }));
    }

    #[tokio::test]
    async fn a_client_error_says_what_was_wrong_and_carries_no_request_id() {
        let (status, _, body) = call("/bad", Some("req-44")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, json!({ "error": "limit must be a number" }));
    }

    /// What a test's subscriber wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What this test binary logs, from its first use on: one global
    /// subscriber. A subscriber set for one test's thread missed the event
    /// now and then: tracing caches per log point, for every thread, that
    /// no subscriber wants it when another test reaches it first.
    fn captured_log() -> &'static Captured {
        static LOG: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
        LOG.get_or_init(|| {
            let log = Captured::default();
            let writer = log.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("the test binary's one global subscriber");
            log
        })
    }

    #[tokio::test]
    async fn the_fault_is_logged_with_the_request_id() {
        let log = captured_log();
        call("/corrupt", Some("req-45")).await;
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.lines()
                .any(|l| l.contains("ERROR") && l.contains("request_id=req-45") && l.contains(SECRET)),
            "no error line with the request id and the fault:\n{text}"
        );
    }
}
