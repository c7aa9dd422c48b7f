//! Dashboard sessions: what the session cookie carries, and what the store
//! keeps of it.
//!
//! **Invariant:** a session id is 32 random bytes (base64url, 43
//! characters); only its SHA-256 digest is stored, and it is never logged.
//! A session belongs to the user and the API key it was made from, so
//! revoking the key ends it; it ends at its expiry (`[auth] session_ttl`)
//! or at logout, whichever comes first.

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Characters of a session id: 32 bytes in unpadded base64url.
pub const SESSION_ID_LEN: usize = 43;

/// A session id as the cookie carries it (secret: `Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl SessionId {
    /// A new random session id.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        SessionId(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Reads a presented id: `None` unless it has the form of one (so
    /// anything else, an old cookie for instance, costs no store lookup).
    pub fn parse(value: &str) -> Option<Self> {
        let well_formed = value.len() == SESSION_ID_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        well_formed.then(|| SessionId(value.to_string()))
    }

    /// The id itself, for the cookie.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digest the store keeps (and looks the session up by).
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// [`SessionId::digest`] in hex, as stored.
    pub fn digest_hex(&self) -> String {
        hex::encode(self.digest())
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// A session to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// The SHA-256 digest of the session id, in hex.
    pub digest: String,
    /// Whose session it is.
    pub user: String,
    /// The API key it was made from.
    pub key_id: i64,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
}

/// A live session, as the store resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The user, with their namespaces.
    pub user: crate::store::User,
    /// The API key it was made from.
    pub key_id: i64,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_url_safe_and_only_their_form_parses() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), SESSION_ID_LEN);
        assert_eq!(SessionId::parse(a.as_str()), Some(a.clone()));
        assert_eq!(a.digest_hex().len(), 64);
        assert!(!format!("{a:?}").contains(a.as_str()));
        for bad in ["", "dTpr", &"a".repeat(44), &format!("{}=", &a.as_str()[..42])] {
            assert!(SessionId::parse(bad).is_none(), "{bad}");
        }
    }
}
