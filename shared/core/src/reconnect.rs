//! The one rule every reconnect or resubscribe loop follows: wait `min`
//! after the first failure, then twice as long after each further one (with
//! random jitter, so that processes that lost the same broker do not come
//! back in step), never longer than `max`; and start again from `min` once
//! a (re)connection worked.
//!
//! A loop that (re)subscribes until it works, then uses the subscription
//! until it ends, is [`Reconnect::until_connected`]:
//!
//! ```no_run
//! # async fn subscribe() -> Result<(), String> { Ok(()) }
//! # async fn demo(shutdown: stevedore_core::shutdown::Shutdown) {
//! use std::time::Duration;
//! use stevedore_core::reconnect::Reconnect;
//!
//! let mut reconnect = Reconnect::new(Duration::from_millis(100), Duration::from_secs(5));
//! while let Some(subscription) = reconnect.until_connected("subscribe", &shutdown, subscribe).await {
//!     // ... use the subscription until it ends ...
//! }
//! # }
//! ```
//!
//! A loop that decides otherwise when a connection worked (the CLI's events
//! stream: once it delivered a frame) calls [`Reconnect::next_delay`] and
//! [`Reconnect::reset`] itself.

use crate::shutdown::Shutdown;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::future::Future;
use std::time::Duration;

/// The delays between attempts of one reconnect loop.
#[derive(Debug)]
pub struct Reconnect {
    builder: ExponentialBuilder,
    max: Duration,
    delays: ExponentialBackoff,
}

impl Reconnect {
    /// Delays from `min`, doubling with jitter, capped at `max` (a `max`
    /// below `min` is taken as `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        let builder = ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_jitter()
            .without_max_times();
        Reconnect {
            builder,
            max,
            delays: builder.build(),
        }
    }

    /// The delay before the next attempt: the base delay (`min`, `2·min`,
    /// `4·min`, … up to `max`) plus a random part of up to as much again,
    /// never more than `max`, in whole milliseconds (it is printed).
    pub fn next_delay(&mut self) -> Duration {
        // backon's jitter adds up to the whole base delay: the cap comes after.
        let d = self.delays.next().unwrap_or(self.max).min(self.max);
        // backon computes in f32: to the nearest millisecond.
        let ms = (d.as_micros() + 500) / 1000;
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)).min(self.max)
    }

    /// Back to `min`: call it once a (re)connection worked.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }

    /// Calls `attempt` until it succeeds, and then [`resets`](Self::reset);
    /// after each failure logs a warning (`cannot {what}`, with the error
    /// and the delay) and waits [`next_delay`](Self::next_delay). `None`
    /// once `shutdown` fires, during an attempt or a wait.
    pub async fn until_connected<T, E, F, Fut>(
        &mut self,
        what: &str,
        shutdown: &Shutdown,
        mut attempt: F,
    ) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        loop {
            let result = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return None,
                r = attempt() => r,
            };
            match result {
                Ok(connected) => {
                    self.reset();
                    return Some(connected);
                }
                Err(e) => {
                    let delay = self.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot {what}");
                    if sleep_or_shutdown(delay, shutdown).await {
                        return None;
                    }
                }
            }
        }
    }
}

/// Sleeps for `delay`, or until `shutdown` fires if that comes first.
/// Returns whether `shutdown` fired (the loop should then stop).
pub async fn sleep_or_shutdown(delay: Duration, shutdown: &Shutdown) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(delay) => shutdown.is_triggered(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    /// The base delays (no jitter) of `MIN`..`MAX`: 100 ms doubling, capped.
    fn bases(n: usize) -> Vec<Duration> {
        std::iter::successors(Some(MIN), |d| Some((*d * 2).min(MAX)))
            .take(n)
            .collect()
    }

    #[test]
    fn delays_start_at_min_double_with_jitter_and_stop_at_max() {
        for _ in 0..50 {
            let mut r = Reconnect::new(MIN, MAX);
            for base in bases(12) {
                let d = r.next_delay();
                assert!(d >= base, "{d:?} is below {base:?}");
                assert!(
                    d <= (base * 2).min(MAX),
                    "{d:?} is above twice {base:?} or {MAX:?}"
                );
                assert_eq!(d.subsec_nanos() % 1_000_000, 0, "{d:?} is not whole milliseconds");
            }
            // Past the cap it stays there.
            for _ in 0..100 {
                assert_eq!(r.next_delay(), MAX);
            }
        }
    }

    #[test]
    fn the_jitter_varies_the_delays() {
        let first: Vec<Duration> = (0..20).map(|_| Reconnect::new(MIN, MAX).next_delay()).collect();
        assert!(
            first.iter().any(|d| *d != first[0]),
            "twenty first delays were all {:?}",
            first[0]
        );
    }

    #[test]
    fn reset_starts_again_from_min() {
        let mut r = Reconnect::new(MIN, MAX);
        for _ in 0..10 {
            r.next_delay();
        }
        assert_eq!(r.next_delay(), MAX);
        r.reset();
        let d = r.next_delay();
        assert!(d >= MIN && d <= MIN * 2, "{d:?}");
    }

    #[test]
    fn a_max_below_min_is_min() {
        let mut r = Reconnect::new(MAX, MIN);
        assert_eq!(r.next_delay(), MAX);
        assert_eq!(r.next_delay(), MAX);
    }

    #[tokio::test]
    async fn until_connected_retries_then_starts_again_from_min() {
        let shutdown = Shutdown::new();
        let mut r = Reconnect::new(Duration::from_millis(1), Duration::from_millis(4));
        let mut failures = 5;
        let connected = r
            .until_connected("connect", &shutdown, || {
                let result = if failures > 0 { Err("refused") } else { Ok("up") };
                failures -= 1;
                async move { result }
            })
            .await;
        assert_eq!(connected, Some("up"));
        assert_eq!(failures, -1, "five failures, then one success");
        // Reset by the success.
        let d = r.next_delay();
        assert!(d <= Duration::from_millis(2), "{d:?}");
    }

    #[tokio::test]
    async fn until_connected_gives_up_on_shutdown() {
        let shutdown = Shutdown::new();
        let mut r = Reconnect::new(Duration::from_secs(600), Duration::from_secs(600));
        let s = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.trigger();
        });
        // Waiting after a failure.
        let failing = r.until_connected("connect", &shutdown, || async { Err::<(), _>("refused") });
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(10), failing).await,
            Ok(None)
        );
        // And an attempt that hangs.
        let hanging = r.until_connected("connect", &shutdown, || {
            std::future::pending::<Result<(), &str>>()
        });
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(10), hanging).await,
            Ok(None)
        );
    }

    #[tokio::test]
    async fn sleep_or_shutdown_sleeps_unless_shutdown_fires() {
        let shutdown = Shutdown::new();
        let started = std::time::Instant::now();
        assert!(!sleep_or_shutdown(Duration::from_millis(20), &shutdown).await);
        assert!(started.elapsed() >= Duration::from_millis(20));

        let s = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.trigger();
        });
        let early = tokio::time::timeout(
            Duration::from_secs(10),
            sleep_or_shutdown(Duration::from_secs(600), &shutdown),
        );
        assert_eq!(early.await, Ok(true));

        // Already fired: no wait at all.
        let early = tokio::time::timeout(
            Duration::from_secs(10),
            sleep_or_shutdown(Duration::from_secs(600), &shutdown),
        );
        assert_eq!(early.await, Ok(true));
    }
}
