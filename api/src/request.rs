//! Facts about a request that an action records: client IP, User-Agent,
//! method and path; and reading an optional JSON-object body.

use crate::client_addr::ClientAddr;
use crate::error::ApiError;
use crate::ApiState;
use axum::extract::FromRequestParts;
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;

/// Where a request came from and what it asked.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// Client IP: the peer address, or behind trusted proxies the address
    /// they forwarded for ([`crate::client_addr`]).
    pub ip: String,
    /// Geographic location of `ip` (empty when no GeoIP database is
    /// configured or the address is not in it).
    pub location: String,
    /// The User-Agent header (empty when absent).
    pub user_agent: String,
    /// HTTP method.
    pub method: String,
    /// Path and query as requested.
    pub path: String,
}

/// Longest User-Agent kept (longer ones are cut, not refused).
const MAX_USER_AGENT: usize = 512;

impl FromRequestParts<ApiState> for RequestInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let client = ClientAddr::of(&state.proxies, &parts.headers, &parts.extensions).client;
        let mut user_agent = parts
            .headers
            .get(USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        if user_agent.len() > MAX_USER_AGENT {
            let mut cut = MAX_USER_AGENT;
            while !user_agent.is_char_boundary(cut) {
                cut -= 1;
            }
            user_agent.truncate(cut);
        }
        let location = match (&state.geoip, client) {
            (Some(g), Some(addr)) => g.locate(addr),
            _ => String::new(),
        };
        let ip = client.map(|a| a.to_string()).unwrap_or_default();
        Ok(RequestInfo {
            ip,
            location,
            user_agent,
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
        })
    }
}

/// Parses a request body that must be empty or a JSON object without NUL
/// bytes in its strings ([`crate::input::json_without_nul`]). Returns the
/// raw text (stored on the action as sent) and the parsed object.
pub fn json_object_body(
    bytes: &[u8],
) -> Result<(String, serde_json::Map<String, serde_json::Value>), ApiError> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| ApiError::BadRequest("request body is not UTF-8".into()))?;
    if text.trim().is_empty() {
        return Ok((String::new(), serde_json::Map::new()));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON in request body: {e}")))?;
    crate::input::json_without_nul(&value)?;
    match value {
        serde_json::Value::Object(map) => Ok((text.to_string(), map)),
        _ => Err(ApiError::BadRequest("request body must be a JSON object".into())),
    }
}
