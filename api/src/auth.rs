//! Authentication: the [`Caller`] extractor, and the one rule for where a
//! request's credentials come from ([`request_credentials`]).
//!
//! **Invariant:** every route that touches tenant data takes a `Caller`, and
//! every read it makes is scoped to `caller.namespaces`.
//!
//! Credentials come from `Authorization` (Basic or ApiKey), else from the
//! session cookie that `POST /api/v1/login` sets (the dashboard, and scripts
//! that keep a cookie jar). The cookie holds the same `user:key` pair a Basic
//! header would, so it is checked against the stored digests on every
//! request and a revoked key ends every session that used it; it is
//! `HttpOnly` (page scripts cannot read it), `SameSite=Strict` and has no
//! expiry (it ends with the browser session). Browsers cannot use it, or
//! cached Basic credentials, from another site to change something or open
//! a websocket: [`crate::origin`] refuses those requests before they get
//! here.

use crate::auth_failures::{Attempt, Outcome};
use crate::client_addr::ClientAddr;
use crate::error::ApiError;
use crate::ApiState;
use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use base64::Engine;
use std::net::IpAddr;
use stevedore_shared::auth::{check_api_key, parse_authorization, Credentials};
use stevedore_shared::store::Scope;

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// User name.
    pub user: String,
    /// Namespaces they may see; the first is their own.
    pub namespaces: Vec<String>,
}

impl Caller {
    /// The store scope of this caller.
    pub fn scope(&self) -> Scope<'_> {
        Scope::Namespaces(&self.namespaces)
    }

    /// The caller's own namespace.
    pub fn own_namespace(&self) -> &str {
        &self.namespaces[0]
    }
}

/// Checks credentials presented from `client` (its address, when known).
///
/// In order: credentials verified in the last few seconds are taken from
/// the process's [`CredentialCache`](crate::credential_cache::CredentialCache);
/// an address or user name over its failure limit gets a 429 without its
/// credentials being checked ([`crate::auth_limit`]); otherwise the key is
/// checked against the user's stored digests, with the same work for an
/// unknown user as for a wrong key ([`check_api_key`]), so that timing does
/// not tell which user names exist. Failures and refusals are counted in
/// the system log per window ([`crate::auth_failures`]).
pub async fn authenticate(
    state: &ApiState,
    creds: &Credentials,
    client: Option<IpAddr>,
) -> Result<Caller, ApiError> {
    // No user name or key holds a NUL byte, and PostgreSQL cannot even be asked.
    crate::input::no_nul("user", &creds.user)?;
    crate::input::no_nul("apikey", &creds.key)?;
    if let Some(caller) = state.credentials.get(creds) {
        return Ok(caller);
    }
    if let Err(retry_after) = state.auth_limit.admit(client, &creds.user) {
        let shown = shown_user(&creds.user, false);
        tracing::info!(user = %shown, client = ?client, "authentication throttled");
        let attempt = Attempt {
            namespace: None,
            user: shown,
            outcome: Outcome::Throttled,
        };
        state.auth_failures.record(attempt).await;
        return Err(too_many_failures(retry_after));
    }
    let found = state.dispatcher.store().credentials(&creds.user).await?;
    let check = check_api_key(&creds.key, found.as_ref().map(|(_, digests)| digests.as_slice()));
    match found {
        Some((user, _)) if check.matched && !user.namespaces.is_empty() => {
            let caller = Caller {
                user: user.name,
                namespaces: user.namespaces,
            };
            state.credentials.insert(creds, &caller);
            Ok(caller)
        }
        other => {
            let shown = shown_user(&creds.user, other.is_some());
            tracing::info!(user = %shown, client = ?client, "authentication failed");
            // Visible to the named user's own namespace when the user exists;
            // otherwise to operators only.
            let attempt = Attempt {
                namespace: other.map(|(u, _)| u.name),
                user: shown,
                outcome: Outcome::Failed,
            };
            state.auth_failures.record(attempt).await;
            match state.auth_limit.charge_failure(client, &creds.user) {
                Ok(()) => Err(ApiError::Unauthorized("invalid credentials".into())),
                Err(retry_after) => Err(too_many_failures(retry_after)),
            }
        }
    }
}

fn too_many_failures(retry_after: std::time::Duration) -> ApiError {
    ApiError::TooManyRequests {
        message: format!(
            "too many failed authentication attempts; retry in {} s",
            crate::error::retry_after_secs(retry_after)
        ),
        retry_after,
    }
}

/// The user name of a failed attempt as logs may show it. A name that is
/// not a user may be a key typed into the wrong field (a login form makes
/// that easy): a name that looks like a key is never written down.
fn shown_user(name: &str, exists: bool) -> String {
    let key_like = name.len() >= 32 && name.chars().all(|c| c.is_ascii_hexdigit());
    if !exists && key_like {
        "<redacted: looks like a key>".into()
    } else {
        name.chars().take(64).collect()
    }
}

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "stevedore_session";

/// The cookie goes to the API only (everything the dashboard calls is
/// under it), not to whatever else the host serves.
const COOKIE_PATH: &str = "/api/";

/// The credentials a request presents: its `Authorization` header, else its
/// session cookie. `Ok(None)`: no credentials at all.
pub fn request_credentials(headers: &HeaderMap) -> Result<Option<Credentials>, ApiError> {
    if let Some(h) = headers.get(AUTHORIZATION) {
        let value = h
            .to_str()
            .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
        let creds = parse_authorization(value).map_err(|e| ApiError::Unauthorized(e.to_string()))?;
        return Ok(Some(creds));
    }
    let Some(value) = session_cookie(headers) else {
        return Ok(None);
    };
    parse_authorization(&format!("Basic {value}"))
        .map(Some)
        .map_err(|_| ApiError::Unauthorized("malformed session cookie; log in again".into()))
}

/// The session cookie's value, if the request carries one.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == SESSION_COOKIE)
        .map(|c| c.value().to_string())
}

/// A 401 challenges `Basic`, except to page scripts, which mark their
/// requests with `X-Requested-With`: they get a `Session` challenge, so the
/// browser shows no password prompt and the page shows its own login form.
pub async fn page_challenge(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let from_page = req.headers().contains_key("x-requested-with");
    let mut resp = next.run(req).await;
    if from_page && resp.status() == axum::http::StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Session realm=\"stevedore\""),
        );
    }
    resp
}

/// The `Set-Cookie` value that starts a session for `creds`.
pub fn session_set_cookie(creds: &Credentials, secure: bool) -> String {
    let value = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", creds.user, creds.key));
    cookie::Cookie::build((SESSION_COOKIE, value))
        .path(COOKIE_PATH)
        .http_only(true)
        .secure(secure)
        .same_site(cookie::SameSite::Strict)
        .build()
        .to_string()
}

/// The `Set-Cookie` value that ends the session.
pub fn session_clear_cookie() -> String {
    cookie::Cookie::build((SESSION_COOKIE, ""))
        .path(COOKIE_PATH)
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .max_age(cookie::time::Duration::ZERO)
        .build()
        .to_string()
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let client = ClientAddr::of(&state.proxies, &parts.headers, &parts.extensions).client;
        let creds = request_credentials(&parts.headers)?.ok_or_else(|| {
            ApiError::Unauthorized(
                "authentication required: send Authorization: Basic base64(user:apikey), or log in at POST /api/v1/login"
                    .into(),
            )
        })?;
        authenticate(state, &creds, client).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_session_cookie_is_read_and_authorization_wins() {
        // "u:k"
        let c = ("cookie", "theme=dark; stevedore_session=dTpr");
        let got = request_credentials(&headers(&[c])).unwrap().unwrap();
        assert_eq!((got.user.as_str(), got.key.as_str()), ("u", "k"));
        let both = headers(&[c, ("authorization", "ApiKey a:b")]);
        assert_eq!(request_credentials(&both).unwrap().unwrap().user, "a");
        assert!(request_credentials(&headers(&[("cookie", "other=1")]))
            .unwrap()
            .is_none());
        let bad = headers(&[("cookie", "stevedore_session=!!!")]);
        assert!(matches!(
            request_credentials(&bad),
            Err(ApiError::Unauthorized(_))
        ));
    }

    #[test]
    fn a_key_typed_as_a_user_name_is_not_logged() {
        let key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(shown_user(key, false), "<redacted: looks like a key>");
        assert_eq!(shown_user("alice", false), "alice");
        assert_eq!(shown_user(&"x".repeat(100), false).len(), 64);
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_session_scoped() {
        let creds = Credentials {
            user: "u".into(),
            key: "k".into(),
        };
        let c = session_set_cookie(&creds, false);
        assert!(c.starts_with("stevedore_session=dTpr"), "{c}");
        for part in ["HttpOnly", "SameSite=Strict", "Path=/api/"] {
            assert!(c.contains(part), "{c}");
        }
        assert!(
            !c.contains("Max-Age") && !c.contains("Expires") && !c.contains("Secure"),
            "{c}"
        );
        assert!(session_set_cookie(&creds, true).contains("Secure"));
        assert!(session_clear_cookie().contains("Max-Age=0"));
    }
}
