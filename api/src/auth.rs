//! Authentication: the [`Caller`] extractor.
//!
//! **Invariant:** every route that touches tenant data takes a `Caller`, and
//! every read it makes is scoped to `caller.namespaces`.

use crate::error::ApiError;
use crate::ApiState;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use stevedore_shared::auth::{parse_authorization, verify_api_key, Credentials};
use stevedore_shared::store::Scope;
use stevedore_shared::syslog::{LogLevel, NewSystemLog};

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

/// Checks credentials against the stored key digests. An unknown user costs
/// the same digest comparison as a wrong key, so timing does not reveal
/// which user names exist. Credentials verified in the last few seconds are
/// taken from the process's [`CredentialCache`](crate::credential_cache::CredentialCache).
pub async fn authenticate(state: &ApiState, creds: &Credentials) -> Result<Caller, ApiError> {
    if let Some(caller) = state.credentials.get(creds) {
        return Ok(caller);
    }
    let caller = authenticate_with_store(state, creds).await?;
    state.credentials.insert(creds, &caller);
    Ok(caller)
}

async fn authenticate_with_store(state: &ApiState, creds: &Credentials) -> Result<Caller, ApiError> {
    let found = state.dispatcher.store().credentials(&creds.user).await?;
    let (user, digests) = match found {
        Some((user, digests)) => (Some(user), digests),
        None => (None, vec![UNKNOWN_USER_DIGEST.to_string()]),
    };
    let key_ok = verify_api_key(&creds.key, &digests);
    match user {
        Some(user) if key_ok && !user.namespaces.is_empty() => Ok(Caller {
            user: user.name,
            namespaces: user.namespaces,
        }),
        other => {
            tracing::info!(user = %creds.user, "authentication failed");
            // Visible to the named user's own namespace when the user exists;
            // otherwise to operators only.
            let entry = NewSystemLog {
                namespace: other.map(|u| u.name),
                category: "auth".into(),
                level: LogLevel::Warn,
                user: creds.user.chars().take(64).collect(),
                message: "authentication failed: invalid credentials".into(),
            };
            if let Err(e) = state.dispatcher.store().append_system_log(&[entry]).await {
                tracing::warn!(error = %e, "system log entry not written");
            }
            Err(ApiError::Unauthorized("invalid credentials".into()))
        }
    }
}

/// A digest no key hashes to in practice, compared against when the user is unknown.
const UNKNOWN_USER_DIGEST: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthorized(
                "authentication required: send Authorization: Basic base64(user:apikey)".into(),
            )
        })?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
        let creds = parse_authorization(value).map_err(|e| ApiError::Unauthorized(e.to_string()))?;
        authenticate(state, &creds).await
    }
}
