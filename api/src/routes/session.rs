//! `POST /api/v1/login` and `POST /api/v1/logout`: the sessions the
//! dashboard (and cookie-jar scripts) authenticate with. The cookie rules
//! live in [`crate::auth`], the session's in [`stevedore_core::session`].

use crate::auth::{authenticate, session_clear_cookie, session_id, session_set_cookie};
use crate::client_addr::ClientAddr;
use crate::error::{ApiError, ApiResult};
use crate::ApiState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use stevedore_core::auth::Credentials;
use stevedore_core::session::{NewSession, SessionId};
use stevedore_core::Error;

/// The login body, as JSON or as an HTML form (no `Debug`: it holds the key).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    user: String,
    apikey: String,
}

/// `POST /api/v1/login` with `{"user": …, "apikey": …}` (JSON or form
/// encoded): 200 with who you are and the cookie of a new session (made
/// from that key, for `[auth] session_ttl`), 401 for wrong credentials (and
/// no cookie), 400 for a malformed body (403 from another origin, see
/// [`crate::origin`]).
pub async fn login(
    State(state): State<ApiState>,
    addr: ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let form = content_type.starts_with("application/x-www-form-urlencoded");
    // Only the types a cross-site "simple" request cannot forge without
    // preflight (JSON), and forms; text/plain and friends are refused.
    if !form && !content_type.starts_with("application/json") {
        return Err(ApiError::UnsupportedMediaType(
            "login takes application/json or application/x-www-form-urlencoded".into(),
        ));
    }
    let login: Login = if form {
        let mut user = None;
        let mut apikey = None;
        for (k, v) in form_urlencoded::parse(&body) {
            match k.as_ref() {
                "user" => user = Some(v.into_owned()),
                "apikey" => apikey = Some(v.into_owned()),
                other => return Err(ApiError::BadRequest(format!("unknown login field {other:?}"))),
            }
        }
        match (user, apikey) {
            (Some(user), Some(apikey)) => Login { user, apikey },
            _ => return Err(ApiError::BadRequest("login needs user and apikey".into())),
        }
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!("login body must be {{\"user\": …, \"apikey\": …}}: {e}"))
        })?
    };
    if login.user.is_empty() || login.apikey.is_empty() || login.user.contains(':') {
        return Err(ApiError::BadRequest("login needs a user and an apikey".into()));
    }
    let creds = Credentials {
        user: login.user,
        key: login.apikey,
    };
    let caller = authenticate(&state, &creds, addr.client).await?;
    let id = SessionId::generate();
    let ttl = chrono::Duration::from_std(state.session_ttl).unwrap_or(chrono::Duration::MAX);
    let session = NewSession {
        digest: id.digest_hex(),
        user: caller.user.clone(),
        key_id: caller.key_id,
        expires_at: chrono::Utc::now() + ttl,
    };
    match state.dispatcher.store().create_session(&session).await {
        Ok(()) => {}
        // The key was revoked since it was verified.
        Err(Error::NotFound(_)) => return Err(ApiError::Unauthorized("invalid credentials".into())),
        Err(e) => return Err(e.into()),
    }
    // Secure whenever the page was loaded over https: as the browser says
    // (Origin), or as a trusted proxy says (X-Forwarded-Proto).
    let secure = addr.https
        || headers
            .get(ORIGIN)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|o| o.to_ascii_lowercase().starts_with("https://"));
    Ok((
        StatusCode::OK,
        [(SET_COOKIE, session_set_cookie(&id, secure))],
        Json(json!({ "user": caller.user, "namespaces": caller.namespaces, "admin": caller.admin })),
    )
        .into_response())
}

/// `POST /api/v1/logout`: ends the request's session in the store, on
/// every process ([`crate::revocation::announce`]), and clears the cookie
/// (204 whether or not there was a session).
pub async fn logout(State(state): State<ApiState>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(id) = session_id(&headers) {
        if let Some(user) = state.dispatcher.store().delete_session(&id.digest_hex()).await? {
            crate::revocation::announce(&state, &user).await;
        }
    }
    Ok((StatusCode::NO_CONTENT, [(SET_COOKIE, session_clear_cookie())]).into_response())
}
