//! A short-lived in-process cache of verified credentials, so that a client
//! sending the same key on every request costs the database nothing.
//!
//! **Invariants:** only successful verifications are cached (a failure always
//! goes to the store and writes its system log entry); entries hold the
//! SHA-256 digest of `user:key` ([`credentials_digest`]), never the key, and a
//! hit is confirmed by a constant-time comparison of digests; an entry lives
//! at most [`CREDENTIAL_TTL`], so a change to a user's keys or namespaces
//! is seen within that time everywhere, and at once in this process through
//! [`CredentialCache::invalidate_user`].

use crate::auth::Caller;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stevedore_shared::auth::{credentials_digest, digests_equal, Credentials};

/// How long a verified credential is trusted without asking the store again.
pub const CREDENTIAL_TTL: Duration = Duration::from_secs(5);
/// Most entries kept; beyond, expired entries go, and if none had expired, all.
pub const MAX_CACHED_CREDENTIALS: usize = 10_000;

struct Entry {
    digest: [u8; 32],
    caller: Caller,
    expires: Instant,
}

/// Verified credentials by the digest of what the client presented.
#[derive(Clone)]
pub struct CredentialCache {
    ttl: Duration,
    entries: Arc<Mutex<HashMap<[u8; 32], Entry>>>,
}

impl Default for CredentialCache {
    fn default() -> Self {
        CredentialCache::new(CREDENTIAL_TTL)
    }
}

impl CredentialCache {
    /// An empty cache whose entries live `ttl` (zero disables it).
    pub fn new(ttl: Duration) -> Self {
        CredentialCache {
            ttl,
            entries: Arc::default(),
        }
    }

    /// The caller these credentials were verified as, if that is recent.
    pub fn get(&self, creds: &Credentials) -> Option<Caller> {
        if self.ttl.is_zero() {
            return None;
        }
        let digest = credentials_digest(creds);
        let mut entries = self.entries.lock().ok()?;
        let entry = entries.get(&digest)?;
        if entry.expires <= Instant::now() {
            entries.remove(&digest);
            return None;
        }
        digests_equal(&entry.digest, &digest).then(|| entry.caller.clone())
    }

    /// Remembers that `creds` were verified as `caller`.
    pub fn insert(&self, creds: &Credentials, caller: &Caller) {
        if self.ttl.is_zero() {
            return;
        }
        let digest = credentials_digest(creds);
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let now = Instant::now();
        if entries.len() >= MAX_CACHED_CREDENTIALS {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= MAX_CACHED_CREDENTIALS {
                entries.clear();
            }
        }
        entries.insert(
            digest,
            Entry {
                digest,
                caller: caller.clone(),
                expires: now + self.ttl,
            },
        );
    }

    /// Forgets every cached credential of `user` (call it when a key of the
    /// user is revoked or the user's namespaces change).
    pub fn invalidate_user(&self, user: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, e| e.caller.user != user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, key: &str) -> Credentials {
        Credentials {
            user: user.into(),
            key: key.into(),
        }
    }

    fn caller(user: &str) -> Caller {
        Caller {
            user: user.into(),
            namespaces: vec![user.into()],
        }
    }

    #[test]
    fn a_hit_needs_the_same_user_and_key() {
        let c = CredentialCache::new(Duration::from_secs(60));
        c.insert(&creds("alice", "k1"), &caller("alice"));
        assert_eq!(c.get(&creds("alice", "k1")).map(|c| c.user), Some("alice".into()));
        assert!(c.get(&creds("alice", "k2")).is_none());
        assert!(c.get(&creds("bob", "k1")).is_none());
        // The separator keeps "a" + "b:c" apart from "a:b" + "c".
        c.insert(&creds("a", "b:c"), &caller("a"));
        assert!(c.get(&creds("a:b", "c")).is_none());
    }

    #[test]
    fn entries_expire_and_users_can_be_invalidated() {
        let c = CredentialCache::new(Duration::from_millis(30));
        c.insert(&creds("alice", "k1"), &caller("alice"));
        c.insert(&creds("bob", "k2"), &caller("bob"));
        c.invalidate_user("alice");
        assert!(c.get(&creds("alice", "k1")).is_none());
        assert!(c.get(&creds("bob", "k2")).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.get(&creds("bob", "k2")).is_none());
        let off = CredentialCache::new(Duration::ZERO);
        off.insert(&creds("alice", "k1"), &caller("alice"));
        assert!(off.get(&creds("alice", "k1")).is_none());
    }
}
