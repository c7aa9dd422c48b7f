//! A short-lived in-process cache of verified credentials and sessions, so
//! that a client sending the same key (or cookie) on every request costs the
//! database nothing.
//!
//! **Invariants:** only successful verifications are cached (a failure always
//! goes to the store); entries are keyed by a SHA-256 digest of what was
//! presented ([`Presented`]), never the key or session id, and a hit is
//! confirmed by a constant-time comparison of digests; an entry lives at most
//! its time to live (`[auth] credential_cache_ttl`, [`CREDENTIAL_TTL`] by
//! default) and never past its session's expiry. A revocation
//! empties the entries it concerns at once ([`CredentialCache::forget_user`],
//! [`CredentialCache::forget_all`]): [`crate::revocation`] decides when, and
//! a verification that was under way when they were emptied is not cached
//! ([`Ticket`]), so what it read before the revocation cannot come back.

use crate::auth::Caller;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stevedore_core::auth::{credentials_digest, digests_equal, Credentials};
use stevedore_core::session::SessionId;

/// How long a verified credential is trusted without asking the store again
/// by default (`[auth] credential_cache_ttl`), and so, at worst, how long a
/// revocation whose message was lost goes unnoticed (see [`crate::revocation`]).
pub const CREDENTIAL_TTL: Duration = Duration::from_secs(5);
/// Most entries kept; beyond, expired entries go, and if none had expired, all.
pub const MAX_CACHED_CREDENTIALS: usize = 10_000;

/// What a request presented, as the cache knows it: the SHA-256 digest of
/// `user\0key` for a key, of the session id for a session. (The two never
/// collide: a session id holds no NUL byte.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Presented([u8; 32]);

impl Presented {
    /// A user name and API key.
    pub fn key(creds: &Credentials) -> Self {
        Presented(credentials_digest(creds))
    }

    /// A session id.
    pub fn session(id: &SessionId) -> Self {
        Presented(id.digest())
    }
}

/// Taken before a verification reads the store: its result is cached only
/// if nothing was forgotten meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

struct Entry {
    digest: [u8; 32],
    caller: Caller,
    expires: Instant,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<[u8; 32], Entry>,
    /// Advances whenever entries are forgotten.
    generation: u64,
    /// The store's credential revision last observed, if it is watched.
    revision: Option<i64>,
}

/// Verified credentials and sessions by the digest of what was presented.
#[derive(Clone)]
pub struct CredentialCache {
    ttl: Duration,
    inner: Arc<Mutex<Inner>>,
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
            inner: Arc::default(),
        }
    }

    /// The caller this presentation was verified as, if that is recent.
    pub fn get(&self, presented: &Presented) -> Option<Caller> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut inner = self.inner.lock().ok()?;
        let entry = inner.entries.get(&presented.0)?;
        if entry.expires <= Instant::now() {
            inner.entries.remove(&presented.0);
            return None;
        }
        digests_equal(&entry.digest, &presented.0).then(|| entry.caller.clone())
    }

    /// Where a verification starts: take it before reading the store.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.inner.lock().map(|i| i.generation).unwrap_or(u64::MAX))
    }

    /// Remembers that `presented` was verified as `caller` (until `until` at
    /// the latest, for a session), unless entries were forgotten since
    /// `ticket` was taken.
    pub fn insert(&self, ticket: Ticket, presented: &Presented, caller: &Caller, until: Option<Instant>) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.generation != ticket.0 {
            return;
        }
        let now = Instant::now();
        let expires = until.map_or(now + self.ttl, |u| u.min(now + self.ttl));
        if inner.entries.len() >= MAX_CACHED_CREDENTIALS {
            inner.entries.retain(|_, e| e.expires > now);
            if inner.entries.len() >= MAX_CACHED_CREDENTIALS {
                inner.entries.clear();
            }
        }
        inner.entries.insert(
            presented.0,
            Entry {
                digest: presented.0,
                caller: caller.clone(),
                expires,
            },
        );
    }

    /// Forgets every cached credential and session of `user` (a key or
    /// session of theirs ended, or their namespaces changed).
    pub fn forget_user(&self, user: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.entries.retain(|_, e| e.caller.user != user);
            inner.generation += 1;
        }
    }

    /// Forgets everything (revocations may have been missed).
    pub fn forget_all(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.entries.clear();
            inner.generation += 1;
        }
    }

    /// Notes the store's credential revision: when it moved since the last
    /// observation, everything is forgotten. The first observation only
    /// records it (nothing was cached before the process could look).
    pub fn observe_revision(&self, revision: i64) {
        if let Ok(mut inner) = self.inner.lock() {
            if inner.revision.is_some_and(|seen| seen != revision) {
                inner.entries.clear();
                inner.generation += 1;
            }
            inner.revision = Some(revision);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str, key: &str) -> Presented {
        Presented::key(&Credentials {
            user: user.into(),
            key: key.into(),
        })
    }

    fn caller(user: &str) -> Caller {
        Caller {
            user: user.into(),
            namespaces: vec![user.into()],
            key_id: 1,
            admin: false,
        }
    }

    fn put(c: &CredentialCache, p: Presented, user: &str) {
        c.insert(c.ticket(), &p, &caller(user), None);
    }

    #[test]
    fn a_hit_needs_the_same_user_and_key() {
        let c = CredentialCache::new(Duration::from_secs(60));
        put(&c, key("alice", "k1"), "alice");
        assert_eq!(c.get(&key("alice", "k1")).map(|c| c.user), Some("alice".into()));
        assert!(c.get(&key("alice", "k2")).is_none());
        assert!(c.get(&key("bob", "k1")).is_none());
        // The separator keeps "a" + "b:c" apart from "a:b" + "c".
        put(&c, key("a", "b:c"), "a");
        assert!(c.get(&key("a:b", "c")).is_none());
        // A session is its own entry.
        let id = SessionId::generate();
        put(&c, Presented::session(&id), "alice");
        assert!(c.get(&Presented::session(&id)).is_some());
        assert!(c.get(&Presented::session(&SessionId::generate())).is_none());
    }

    #[test]
    fn entries_expire_and_users_can_be_forgotten() {
        let c = CredentialCache::new(Duration::from_millis(30));
        put(&c, key("alice", "k1"), "alice");
        put(&c, key("bob", "k2"), "bob");
        c.forget_user("alice");
        assert!(c.get(&key("alice", "k1")).is_none());
        assert!(c.get(&key("bob", "k2")).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.get(&key("bob", "k2")).is_none());
        let off = CredentialCache::new(Duration::ZERO);
        put(&off, key("alice", "k1"), "alice");
        assert!(off.get(&key("alice", "k1")).is_none());
    }

    #[test]
    fn a_session_entry_ends_with_its_session() {
        let c = CredentialCache::new(Duration::from_secs(60));
        let id = SessionId::generate();
        let p = Presented::session(&id);
        c.insert(c.ticket(), &p, &caller("alice"), Some(Instant::now()));
        assert!(c.get(&p).is_none());
    }

    #[test]
    fn a_verification_under_way_during_a_revocation_is_not_cached() {
        let c = CredentialCache::new(Duration::from_secs(60));
        let ticket = c.ticket();
        c.forget_user("somebody");
        c.insert(ticket, &key("alice", "k1"), &caller("alice"), None);
        assert!(c.get(&key("alice", "k1")).is_none());
        let ticket = c.ticket();
        c.forget_all();
        c.insert(ticket, &key("alice", "k1"), &caller("alice"), None);
        assert!(c.get(&key("alice", "k1")).is_none());
    }

    #[test]
    fn a_moved_revision_forgets_everything() {
        let c = CredentialCache::new(Duration::from_secs(60));
        c.observe_revision(3);
        put(&c, key("alice", "k1"), "alice");
        c.observe_revision(3);
        assert!(c.get(&key("alice", "k1")).is_some());
        c.observe_revision(4);
        assert!(c.get(&key("alice", "k1")).is_none());
    }
}
