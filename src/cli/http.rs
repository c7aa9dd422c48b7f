//! The REST client: Basic auth like the Docker Cloud / Tutum clients, JSON
//! in and out, and errors phrased for people.

use super::config::{check_url, Resolved};
use anyhow::{anyhow, Result};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;
use stevedore_core::auth::basic_authorization;

/// What `Authorization` header the client sends, and where.
#[derive(Debug, Clone)]
pub struct Api {
    pub url: String,
    pub stream_url: String,
    auth: String,
    http: reqwest::Client,
}

/// The message for a 401.
pub const NOT_AUTHORIZED: &str =
    "not authorized: check STEVEDORE_USER / STEVEDORE_APIKEY or run stevedore login";

/// User-Agent of every request and websocket handshake.
pub fn user_agent() -> String {
    format!("stevedore-cli/{}", env!("CARGO_PKG_VERSION"))
}

/// A failed request, classified so commands can react (e.g. 404 → "no action matches").
#[derive(Debug)]
pub enum ApiError {
    /// The server could not be reached.
    Unreachable { url: String, cause: String },
    /// 401.
    Unauthorized,
    /// Any other non-2xx status, with the server's `error` message.
    Status { status: StatusCode, message: String },
    /// A 2xx whose body is not what was expected.
    Invalid(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Unreachable { url, cause } => write!(f, "cannot reach {url}: {cause}"),
            ApiError::Unauthorized => f.write_str(NOT_AUTHORIZED),
            ApiError::Status { status, message } => match *status {
                StatusCode::NOT_FOUND => write!(f, "not found: {message}"),
                StatusCode::CONFLICT => write!(f, "conflict: {message}"),
                s => write!(
                    f,
                    "{} {}: {message}",
                    s.as_u16(),
                    s.canonical_reason().unwrap_or("error")
                ),
            },
            ApiError::Invalid(m) => write!(f, "unexpected response: {m}"),
        }
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// The HTTP status, for status errors.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            ApiError::Unauthorized => Some(StatusCode::UNAUTHORIZED),
            _ => None,
        }
    }
}

/// The innermost cause of an error chain ("Connection refused (os error 111)").
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The `error` of a JSON error body, else the body itself.
pub fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| {
            let t = body.trim();
            if t.is_empty() {
                "(empty response)".into()
            } else {
                t.chars().take(500).collect()
            }
        })
}

/// A response: its JSON body (Null when empty) and headers.
pub struct Reply {
    pub json: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Api {
    /// A client for the resolved settings; needs a user and an API key.
    pub fn new(r: &Resolved) -> Result<Api> {
        let (Some(user), Some(key)) = (r.user.as_deref(), r.apikey.as_deref()) else {
            return Err(anyhow!(
                "no credentials: set STEVEDORE_USER and STEVEDORE_APIKEY (or --user/--apikey), or run stevedore login"
            ));
        };
        Api::with_auth(r, basic_authorization(user, key))
    }

    /// A client sending `auth` verbatim.
    pub fn with_auth(r: &Resolved, auth: String) -> Result<Api> {
        check_url(&r.url, "API URL")?;
        check_url(&r.stream_url, "stream URL")?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .user_agent(user_agent())
            .build()?;
        Ok(Api {
            url: r.url.clone(),
            stream_url: r.stream_url.clone(),
            auth,
            http,
        })
    }

    /// The `Authorization` header value.
    pub fn auth_header(&self) -> &str {
        &self.auth
    }

    fn request(&self, method: Method, path: &str, query: &[(&str, String)]) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.url, path))
            .query(query)
            .header("Authorization", &self.auth)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
    }

    fn unreachable(&self, e: reqwest::Error) -> ApiError {
        let cause = if e.is_timeout() {
            "timed out".to_string()
        } else {
            root_cause(&e)
        };
        ApiError::Unreachable {
            url: self.url.clone(),
            cause,
        }
    }

    /// Sends a request; a non-2xx status is an [`ApiError`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<String>,
    ) -> Result<Reply, ApiError> {
        let mut req = self.request(method, path, query);
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.map_err(|e| self.unreachable(e))?;
        if status == StatusCode::UNAUTHORIZED {
            return Err(ApiError::Unauthorized);
        }
        if !status.is_success() {
            return Err(ApiError::Status {
                status,
                message: error_message(&text),
            });
        }
        let json = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .map_err(|e| ApiError::Invalid(format!("{path}: body is not JSON ({e})")))?
        };
        Ok(Reply { json, headers })
    }

    /// `GET path?query` → JSON.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ApiError> {
        Ok(self.send(Method::GET, path, query, None).await?.json)
    }

    /// The objects of the Tastypie list at `path` matching `query`,
    /// following pages (`offset = meta.offset + meta.limit`, as the
    /// original clients do) until `limit` objects (0: no limit), asking
    /// for `page_size` first.
    pub async fn all_pages(
        &self,
        path: &str,
        query: &[(&'static str, String)],
        limit: usize,
        page_size: u64,
    ) -> Result<Vec<Value>, ApiError> {
        let mut out: Vec<Value> = vec![];
        let mut page_limit = page_size;
        let mut offset = 0u64;
        loop {
            let mut q = query.to_vec();
            q.push(("limit", page_limit.to_string()));
            q.push(("offset", offset.to_string()));
            let page = self.get(path, &q).await?;
            let objects = page["objects"].as_array().ok_or_else(|| {
                ApiError::Invalid(format!("{path} did not answer with a list envelope (no objects)"))
            })?;
            out.extend(objects.iter().cloned());
            if limit > 0 && out.len() >= limit {
                out.truncate(limit);
                return Ok(out);
            }
            let meta = &page["meta"];
            let next = meta.get("next").is_some_and(|n| !n.is_null() && n != "");
            let (Some(m_offset), Some(m_limit)) = (meta["offset"].as_u64(), meta["limit"].as_u64()) else {
                return Ok(out);
            };
            if !next || objects.is_empty() || m_limit == 0 {
                return Ok(out);
            }
            offset = m_offset + m_limit;
            page_limit = m_limit;
        }
    }

    /// `POST path` with an optional JSON body → JSON.
    pub async fn post(&self, path: &str, body: Option<String>) -> Result<Reply, ApiError> {
        self.send(Method::POST, path, &[], body).await
    }

    /// `GET path?query` as a raw response (for streamed downloads).
    pub async fn get_raw(&self, path: &str, query: &[(&str, String)]) -> Result<reqwest::Response, ApiError> {
        let resp = self
            .request(Method::GET, path, query)
            .header("Accept", "text/csv, */*")
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            return Err(ApiError::Unauthorized);
        }
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(ApiError::Status {
                status,
                message: error_message(&text),
            });
        }
        Ok(resp)
    }

    /// The error for a failed read of a response body.
    pub fn read_error(&self, e: reqwest::Error) -> ApiError {
        self.unreachable(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_come_from_the_servers_json() {
        assert_eq!(
            error_message(r#"{"error": "action is Success"}"#),
            "action is Success"
        );
        assert_eq!(error_message("plain text\n"), "plain text");
        assert_eq!(error_message(""), "(empty response)");
        let e = ApiError::Status {
            status: StatusCode::CONFLICT,
            message: "action is Success".into(),
        };
        assert_eq!(e.to_string(), "conflict: action is Success");
        let e = ApiError::Status {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "database unavailable".into(),
        };
        assert_eq!(e.to_string(), "503 Service Unavailable: database unavailable");
        assert_eq!(ApiError::Unauthorized.to_string(), NOT_AUTHORIZED);
    }
}
