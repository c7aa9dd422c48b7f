//! `sleep`: waits, then succeeds — a stand-in for a long operation in tests,
//! demos and benchmarks. The duration comes from the request body:
//! `{"seconds": 2.5}` or `{"duration": "2s"}`; default one second, capped at
//! one hour. It reports its progress (the share of the time slept) about
//! [`PROGRESS_STEPS`] times.

use super::{Handler, HandlerContext, Outcome};
use async_trait::async_trait;
use std::time::Duration;
use stevedore_core::logline::StreamType;

/// Sleeps for the requested time, cancellably.
pub struct SleepHandler;

/// Used when the body names no duration.
const DEFAULT_SLEEP: Duration = Duration::from_secs(1);
/// Upper bound, so a typo cannot park a worker slot for days.
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// How many progress reports a sleep makes (at most one every
/// [`MIN_PROGRESS_STEP`]).
pub const PROGRESS_STEPS: u32 = 20;
/// The shortest time between two progress reports of a sleep.
const MIN_PROGRESS_STEP: Duration = Duration::from_millis(100);

/// The duration a request body asks for.
pub fn requested_duration(body: &str) -> Duration {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let d = if let Some(s) = v.get("seconds").and_then(|s| s.as_f64()) {
        Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(MAX_SLEEP)
    } else if let Some(text) = v.get("duration").and_then(|s| s.as_str()) {
        humantime_parse(text).unwrap_or(DEFAULT_SLEEP)
    } else {
        DEFAULT_SLEEP
    };
    d.min(MAX_SLEEP)
}

fn humantime_parse(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.trim().parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs.max(0.0)).ok()
}

#[async_trait]
impl Handler for SleepHandler {
    async fn run(&self, ctx: &HandlerContext) -> Outcome {
        let d = requested_duration(&ctx.action.body);
        ctx.log(StreamType::Stdout, format!("sleeping {:.3}s", d.as_secs_f64()))
            .await;
        let total = d.as_secs_f64();
        let step = (d / PROGRESS_STEPS).max(MIN_PROGRESS_STEP);
        let start = tokio::time::Instant::now();
        let deadline = start + d;
        ctx.progress(0, format!("sleeping {total:.1}s"));
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.min(now + step)) => {}
                _ = ctx.cancel.cancelled() => return Outcome::Canceled,
            }
            let slept = start.elapsed().as_secs_f64().min(total);
            let percent = if total > 0.0 {
                (slept / total * 100.0) as u8
            } else {
                100
            };
            ctx.progress(percent.min(100), format!("slept {slept:.1}s of {total:.1}s"));
        }
        ctx.log(StreamType::Stdout, "done").await;
        Outcome::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_come_from_the_body() {
        assert_eq!(
            requested_duration(r#"{"seconds": 2.5}"#),
            Duration::from_millis(2500)
        );
        assert_eq!(
            requested_duration(r#"{"duration": "250ms"}"#),
            Duration::from_millis(250)
        );
        assert_eq!(
            requested_duration(r#"{"duration": "2m"}"#),
            Duration::from_secs(120)
        );
        assert_eq!(requested_duration(""), DEFAULT_SLEEP);
        assert_eq!(requested_duration(r#"{"seconds": 1e12}"#), MAX_SLEEP);
        assert_eq!(requested_duration(r#"{"seconds": -4}"#), Duration::ZERO);
    }
}
