//! Per-user caps on what a connection holds for long: websockets and
//! long-polls. Each process counts its own (a user may hold the cap on every
//! API or stream process); a user at the cap gets a 429 until one ends.

use crate::error::ApiError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How many of one kind of long-lived request each user holds.
#[derive(Clone)]
pub struct UserSlots {
    what: &'static str,
    max: usize,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

impl UserSlots {
    /// Slots for `what` (named in the 429's message), `max` per user.
    pub fn new(what: &'static str, max: usize) -> Self {
        UserSlots {
            what,
            max,
            held: Arc::default(),
        }
    }

    /// Takes one of `user`'s slots until the returned guard drops; 429 when
    /// they hold `max` already.
    pub fn acquire(&self, user: &str) -> Result<UserSlot, ApiError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(user.to_string()).or_default();
        if *n >= self.max {
            tracing::info!(user, what = self.what, max = self.max, "per-user cap reached");
            return Err(ApiError::AtCapacity(format!(
                "too many {}: at most {} open per user; close one and retry",
                self.what, self.max
            )));
        }
        *n += 1;
        Ok(UserSlot {
            slots: self.clone(),
            user: user.to_string(),
        })
    }

    /// Slots `user` holds now.
    pub fn held(&self, user: &str) -> usize {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(user).copied().unwrap_or(0)
    }
}

/// One held slot; dropping it frees the slot.
pub struct UserSlot {
    slots: UserSlots,
    user: String,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_at_the_cap_is_refused_until_a_slot_is_freed() {
        let slots = UserSlots::new("websockets", 2);
        let a = slots.acquire("ann").unwrap();
        let _b = slots.acquire("ann").unwrap();
        let refused = slots.acquire("ann").err().unwrap();
        assert_eq!(refused.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(slots.acquire("bob").is_ok(), "another user is not affected");
        drop(a);
        assert!(slots.acquire("ann").is_ok());
        assert_eq!(slots.held("bob"), 0, "a dropped slot is freed");
    }
}
