//! Authentication: the [`Caller`] extractor, and the one rule for where a
//! request's credentials come from ([`request_credentials`]).
//!
//! **Invariant:** every route that touches tenant data takes a `Caller`, and
//! every read it makes is scoped to `caller.namespaces`.
//!
//! Credentials come from `Authorization` (Basic or ApiKey), else from the
//! session cookie that `POST /api/v1/login` sets (the dashboard, and scripts
//! that keep a cookie jar). The cookie carries a session id only, never the
//! key: the store keeps the id's digest with the user, the key the session
//! was made from and its expiry ([`stevedore_core::session`]), so logging
//! out, revoking the key or the expiry ends it, whoever copied the cookie.
//! The cookie is `HttpOnly` (page scripts cannot read it), `SameSite=Strict`
//! and has no expiry of its own (it ends with the browser session, or
//! earlier on the server). Browsers cannot use it, or cached Basic
//! credentials, from another site to change something or open a websocket:
//! [`crate::origin`] refuses those requests before they get here.

use crate::auth_failures::{Attempt, Outcome};
use crate::client_addr::ClientAddr;
use crate::credential_cache::Presented;
use crate::error::ApiError;
use crate::ApiState;
use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use std::net::IpAddr;
use stevedore_core::auth::{check_api_key, parse_authorization, Credentials};
use stevedore_core::session::SessionId;
use stevedore_core::store::Scope;

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// User name.
    pub user: String,
    /// Namespaces they may see; the first is their own.
    pub namespaces: Vec<String>,
    /// The API key the request's credentials come from: the key presented,
    /// or the one its session was made from.
    pub key_id: i64,
    /// An operator ([`stevedore_core::store::User::admin`]).
    pub admin: bool,
}

/// What a request presents to authenticate.
#[derive(Debug, Clone)]
pub enum Presentation {
    /// A user name and API key (`Authorization`, or a websocket's query).
    Key(Credentials),
    /// A session id (the session cookie).
    Session(SessionId),
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

    /// The one rule of the operators' routes (the workers registry): an
    /// admin passes, anyone else gets a 403 that says why.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "{} is not an admin; an operator grants it with `stevedore user grant-admin {}`",
                self.user, self.user
            )))
        }
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
    crate::revocation::confirm_cache(state).await?;
    let presented = Presented::key(creds);
    if let Some(caller) = state.credentials.get(&presented) {
        return Ok(caller);
    }
    if let Err(retry_after) = state.auth_limit.admit(client, Some(&creds.user)) {
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
    let ticket = state.credentials.ticket();
    let found = state.dispatcher.store().credentials(&creds.user).await?;
    let check = check_api_key(&creds.key, found.as_ref().map(|(_, keys)| keys.as_slice()));
    let matched = found
        .as_ref()
        .and_then(|(_, keys)| check.position.and_then(|p| keys.get(p)))
        .map(|k| k.id);
    match (found, matched) {
        (Some((user, _)), Some(key_id)) if !user.namespaces.is_empty() => {
            let caller = Caller {
                user: user.name,
                namespaces: user.namespaces,
                key_id,
                admin: user.admin,
            };
            state.credentials.insert(ticket, &presented, &caller, None);
            record_key_use(state, key_id);
            Ok(caller)
        }
        (other, _) => {
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
            match state.auth_limit.charge_failure(client, Some(&creds.user)) {
                Ok(()) => Err(ApiError::Unauthorized("invalid credentials".into())),
                Err(retry_after) => Err(too_many_failures(retry_after)),
            }
        }
    }
}

/// Writes a key's last use in the background (the store writes it at most
/// once a minute), so no request waits for it.
fn record_key_use(state: &ApiState, key_id: i64) {
    let store = state.dispatcher.store().clone();
    tokio::spawn(async move {
        if let Err(e) = store.record_key_use(key_id).await {
            tracing::debug!(error = %e, key_id, "key use not recorded");
        }
    });
}

/// Resolves a session cookie's id to its user, like [`authenticate`] does
/// a key: recently resolved sessions come from the cache (never past their
/// expiry); a blocked address gets a 429; an unknown, ended or expired
/// session is a 401 and is charged to the client's address (there is no
/// user name to charge). No system log entry: an expired cookie is routine.
pub async fn authenticate_session(
    state: &ApiState,
    id: &SessionId,
    client: Option<IpAddr>,
) -> Result<Caller, ApiError> {
    crate::revocation::confirm_cache(state).await?;
    let presented = Presented::session(id);
    if let Some(caller) = state.credentials.get(&presented) {
        return Ok(caller);
    }
    if let Err(retry_after) = state.auth_limit.admit(client, None) {
        return Err(too_many_failures(retry_after));
    }
    let ticket = state.credentials.ticket();
    match state.dispatcher.store().session(&id.digest_hex()).await? {
        Some(session) if !session.user.namespaces.is_empty() => {
            let caller = Caller {
                user: session.user.name,
                namespaces: session.user.namespaces,
                key_id: session.key_id,
                admin: session.user.admin,
            };
            let left = (session.expires_at - chrono::Utc::now())
                .to_std()
                .unwrap_or_default();
            let until = std::time::Instant::now() + left;
            state.credentials.insert(ticket, &presented, &caller, Some(until));
            Ok(caller)
        }
        _ => match state.auth_limit.charge_failure(client, None) {
            Ok(()) => Err(session_ended()),
            Err(retry_after) => Err(too_many_failures(retry_after)),
        },
    }
}

/// Authenticates what a request presented ([`authenticate`] or
/// [`authenticate_session`]).
pub async fn authenticate_presented(
    state: &ApiState,
    presented: &Presentation,
    client: Option<IpAddr>,
) -> Result<Caller, ApiError> {
    match presented {
        Presentation::Key(creds) => authenticate(state, creds, client).await,
        Presentation::Session(id) => authenticate_session(state, id, client).await,
    }
}

fn session_ended() -> ApiError {
    ApiError::Unauthorized("session ended or expired; log in again".into())
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

/// What a request presents: its `Authorization` header, else its session
/// cookie. `Ok(None)`: no credentials at all. A cookie that is not a
/// session id (one from before sessions were stored, say) is a 401 at once.
pub fn request_credentials(headers: &HeaderMap) -> Result<Option<Presentation>, ApiError> {
    if let Some(h) = headers.get(AUTHORIZATION) {
        let value = h
            .to_str()
            .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
        let creds = parse_authorization(value).map_err(|e| ApiError::Unauthorized(e.to_string()))?;
        return Ok(Some(Presentation::Key(creds)));
    }
    let Some(value) = session_cookie(headers) else {
        return Ok(None);
    };
    SessionId::parse(&value)
        .map(|id| Some(Presentation::Session(id)))
        .ok_or_else(session_ended)
}

/// The session id of the request's cookie, if it carries a well-formed one.
pub fn session_id(headers: &HeaderMap) -> Option<SessionId> {
    session_cookie(headers).and_then(|v| SessionId::parse(&v))
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
/// requests with `X-Requested-With`, and to event-stream requests (an
/// `EventSource` can mark nothing): they get a `Session` challenge, so the
/// browser shows no password prompt and the page shows its own login form.
pub async fn page_challenge(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let from_page = req.headers().contains_key("x-requested-with")
        || crate::stream::sse::wants_event_stream(req.headers());
    let mut resp = next.run(req).await;
    if from_page && resp.status() == axum::http::StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Session realm=\"stevedore\""),
        );
    }
    resp
}

/// The `Set-Cookie` value that starts session `id`.
pub fn session_set_cookie(id: &SessionId, secure: bool) -> String {
    cookie::Cookie::build((SESSION_COOKIE, id.as_str()))
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
        authenticate_presented(state, &creds, client).await
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

    const ID: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn the_session_cookie_is_read_and_authorization_wins() {
        let cookie = format!("theme=dark; stevedore_session={ID}");
        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_str(&cookie).unwrap());
        match request_credentials(&h).unwrap().unwrap() {
            Presentation::Session(id) => assert_eq!(id.as_str(), ID),
            other => panic!("{other:?}"),
        }
        assert_eq!(session_id(&h).map(|id| id.as_str().to_string()), Some(ID.into()));
        h.append("authorization", HeaderValue::from_static("ApiKey a:b"));
        match request_credentials(&h).unwrap().unwrap() {
            Presentation::Key(c) => assert_eq!(c.user, "a"),
            other => panic!("{other:?}"),
        }
        assert!(request_credentials(&headers(&[("cookie", "other=1")]))
            .unwrap()
            .is_none());
        // Not a session id: the old user:key cookie, or garbage.
        for bad in ["stevedore_session=dTpr", "stevedore_session=!!!"] {
            assert!(matches!(
                request_credentials(&headers(&[("cookie", bad)])),
                Err(ApiError::Unauthorized(_))
            ));
        }
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
        let id = SessionId::parse(ID).unwrap();
        let c = session_set_cookie(&id, false);
        assert!(c.starts_with(&format!("stevedore_session={ID};")), "{c}");
        for part in ["HttpOnly", "SameSite=Strict", "Path=/api/"] {
            assert!(c.contains(part), "{c}");
        }
        assert!(
            !c.contains("Max-Age") && !c.contains("Expires") && !c.contains("Secure"),
            "{c}"
        );
        assert!(session_set_cookie(&id, true).contains("Secure"));
        assert!(session_clear_cookie().contains("Max-Age=0"));
    }
}
