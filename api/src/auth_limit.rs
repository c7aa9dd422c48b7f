//! Limits on failed authentication, per client address and per user name
//! (`[auth]` in the config), so keys cannot be guessed at the speed of the
//! network.
//!
//! Each failure takes one unit from the address's allowance and one from
//! the user name's (`governor`'s GCRA, refilling evenly over
//! `failure_window`). When a failure finds an allowance empty, the address
//! or user is *blocked* until governor says the next unit is due, and every
//! attempt from it or for it is answered 429 without its credentials being
//! checked: otherwise a correct guess would still show as a success among
//! the 429s. Successful authentications take nothing, and credentials
//! verified recently are served from the credential cache before the limits
//! are consulted, so a user's working sessions survive an attack on their
//! name.

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;
use stevedore_core::config::AuthSettings;

/// Keys tracked per limit before stale ones are swept (a sweep drops the
/// keys whose allowance is full again, so memory follows the attack's
/// breadth within one window, not its length).
const SWEEP_ABOVE: usize = 10_000;

/// Longest user name used as a key (longer names are cut, like in logs).
const MAX_USER_KEY: usize = 64;

/// Who an attempt is charged to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Address(IpAddr),
    User(String),
}

type Limiter<C> =
    RateLimiter<Subject, DefaultKeyedStateStore<Subject>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The failure limits of one process.
pub struct AuthLimiter<C: Clock = DefaultClock> {
    by_address: Option<Limiter<C>>,
    by_user: Option<Limiter<C>>,
    clock: C,
    /// Subjects whose allowance ran out, until governor's next unit is due.
    blocked: Mutex<HashMap<Subject, C::Instant>>,
}

impl Default for AuthLimiter {
    fn default() -> Self {
        AuthLimiter::new(&AuthSettings::default())
    }
}

impl AuthLimiter {
    /// The limits `settings` configure, on the real clock.
    pub fn new(settings: &AuthSettings) -> Self {
        AuthLimiter::with_clock(settings, DefaultClock::default())
    }
}

impl<C: Clock + Clone> AuthLimiter<C>
where
    C::Instant: Reference,
{
    /// The limits `settings` configure, on `clock` (tests use a fake one).
    pub fn with_clock(settings: &AuthSettings, clock: C) -> Self {
        let limiter = |per_window: u32| {
            let burst = NonZeroU32::new(per_window)?;
            let period = settings.failure_window.checked_div(per_window)?;
            let quota = Quota::with_period(period)?.allow_burst(burst);
            Some(RateLimiter::dashmap_with_clock(quota, clock.clone()))
        };
        AuthLimiter {
            by_address: limiter(settings.failures_per_address),
            by_user: limiter(settings.failures_per_user),
            clock,
            blocked: Mutex::default(),
        }
    }

    /// `Err(retry_after)` while the address or the user name (when one was
    /// given: a session cookie names none) is blocked.
    pub fn admit(&self, address: Option<IpAddr>, user: Option<&str>) -> Result<(), Duration> {
        let now = self.clock.now();
        let Ok(mut blocked) = self.blocked.lock() else {
            return Ok(());
        };
        let mut wait = Duration::ZERO;
        for subject in subjects(address, user) {
            match blocked.get(&subject) {
                Some(until) if *until > now => wait = wait.max(until.duration_since(now).into()),
                Some(_) => {
                    blocked.remove(&subject);
                }
                None => {}
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// Charges one failure to the address and the user name (when one was given).
    /// `Err(retry_after)` when that emptied an allowance: the subject is
    /// blocked from now on.
    pub fn charge_failure(&self, address: Option<IpAddr>, user: Option<&str>) -> Result<(), Duration> {
        let mut wait = Duration::ZERO;
        for subject in subjects(address, user) {
            let limiter = match subject {
                Subject::Address(_) => &self.by_address,
                Subject::User(_) => &self.by_user,
            };
            let Some(limiter) = limiter else { continue };
            if limiter.len() > SWEEP_ABOVE {
                limiter.retain_recent();
            }
            if let Err(not_until) = limiter.check_key(&subject) {
                let now = self.clock.now();
                let retry = not_until.wait_time_from(now).max(Duration::from_secs(1));
                wait = wait.max(retry);
                if let Ok(mut blocked) = self.blocked.lock() {
                    if blocked.len() > SWEEP_ABOVE {
                        blocked.retain(|_, until| *until > now);
                    }
                    blocked.insert(subject, now + Nanos::from(retry));
                }
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait)
        }
    }
}

fn subjects(address: Option<IpAddr>, user: Option<&str>) -> impl Iterator<Item = Subject> {
    let user = user.map(|u| Subject::User(u.chars().take(MAX_USER_KEY).collect()));
    address.map(Subject::Address).into_iter().chain(user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn settings(per_address: u32, per_user: u32) -> AuthSettings {
        AuthSettings {
            failures_per_address: per_address,
            failures_per_user: per_user,
            failure_window: Duration::from_secs(60),
            ..AuthSettings::default()
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_address_is_blocked_once_its_failures_run_out_and_refills() {
        let clock = FakeRelativeClock::default();
        let l = AuthLimiter::with_clock(&settings(3, 0), clock.clone());
        let a = ip("192.0.2.1");
        for user in ["u1", "u2", "u3"] {
            assert!(l.admit(a, Some(user)).is_ok());
            assert!(l.charge_failure(a, Some(user)).is_ok());
        }
        let retry = l.charge_failure(a, Some("u4")).unwrap_err();
        assert!(
            retry >= Duration::from_secs(1) && retry <= Duration::from_secs(20),
            "{retry:?}"
        );
        // Blocked for every user name, right keys included; others go on.
        assert!(l.admit(a, Some("someone-else")).is_err());
        assert!(l.admit(ip("192.0.2.2"), Some("u1")).is_ok());
        // One unit refills every 20 s (3 per minute).
        clock.advance(Duration::from_secs(21));
        assert!(l.admit(a, Some("u1")).is_ok());
        assert!(l.charge_failure(a, Some("u1")).is_ok());
        assert!(l.charge_failure(a, Some("u1")).is_err());
        // Without a user name (a session cookie), the address alone is charged.
        assert!(l.admit(a, None).is_err());
        assert!(l.admit(ip("192.0.2.2"), None).is_ok());
    }

    #[test]
    fn a_user_name_is_blocked_from_every_address() {
        let clock = FakeRelativeClock::default();
        let l = AuthLimiter::with_clock(&settings(0, 2), clock);
        assert!(l.charge_failure(ip("192.0.2.1"), Some("alice")).is_ok());
        assert!(l.charge_failure(ip("192.0.2.2"), Some("alice")).is_ok());
        assert!(l.charge_failure(ip("192.0.2.3"), Some("alice")).is_err());
        assert!(l.admit(ip("198.51.100.9"), Some("alice")).is_err());
        assert!(l.admit(None, Some("alice")).is_err());
        assert!(
            l.admit(ip("192.0.2.1"), Some("bob")).is_ok(),
            "addresses are not limited here"
        );
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let l = AuthLimiter::with_clock(&settings(0, 0), FakeRelativeClock::default());
        for _ in 0..1000 {
            assert!(l.charge_failure(ip("192.0.2.1"), Some("alice")).is_ok());
        }
        assert!(l.admit(ip("192.0.2.1"), Some("alice")).is_ok());
    }
}
