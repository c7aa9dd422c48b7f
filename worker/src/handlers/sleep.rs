//! `sleep`: waits, then succeeds — a stand-in for a long operation in tests,
//! demos and benchmarks. The duration comes from the request body:
//! `{"seconds": 2.5}` or `{"duration": "2s"}`; default one second, capped at
//! one hour.

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
        tokio::select! {
            _ = tokio::time::sleep(d) => {
                ctx.log(StreamType::Stdout, "done").await;
                Outcome::Success
            }
            _ = ctx.cancel.cancelled() => Outcome::Canceled,
        }
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
