//! `latency`: POST → Success event at a fixed offered rate, measured where a
//! user sees it: on an events websocket (`/api/audit/v1/events`) connected
//! to the stream hub, or (`--to updates`) on the updates exchange the hub
//! reads from.

use crate::rig::{percentiles, CpuTimes, Options, Rig, Stages};
use anyhow::{Context, Result};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stevedore_core::broker::Broker;
use tokio_tungstenite::tungstenite::Message;

/// Where the Success event is awaited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Probe {
    /// An events websocket client of the API's stream routes.
    Ws,
    /// A subscription to the updates exchange (the stream hub's input).
    Updates,
}

/// Pairs each accepted POST with its action's Success event, whichever
/// arrives first (a fast worker can finish before the 202 is read).
#[derive(Default)]
struct Tracker {
    pending: HashMap<String, Side>,
    histogram: Option<Histogram<u64>>,
}

enum Side {
    Sent(Instant),
    Seen(Instant),
}

impl Tracker {
    fn record(&mut self, from: Instant, to: Instant) {
        let h = self
            .histogram
            .get_or_insert_with(|| Histogram::new(3).expect("histogram"));
        let _ = h.record(to.saturating_duration_since(from).as_micros() as u64);
    }

    fn accepted(&mut self, uuid: String, sent: Instant) {
        match self.pending.remove(&uuid) {
            Some(Side::Seen(seen)) => self.record(sent, seen),
            _ => {
                self.pending.insert(uuid, Side::Sent(sent));
            }
        }
    }

    fn succeeded(&mut self, uuid: String, seen: Instant) {
        match self.pending.remove(&uuid) {
            Some(Side::Sent(sent)) => self.record(sent, seen),
            _ => {
                self.pending.insert(uuid, Side::Seen(seen));
            }
        }
    }

    fn measured(&self) -> u64 {
        self.histogram.as_ref().map_or(0, |h| h.len())
    }
}

/// The uuid of an action's Success event, if `v` is one.
fn success_uuid(v: &Value) -> Option<String> {
    if v["type"] == "action" && v["state"] == "Success" {
        v["uuid"].as_str().map(String::from)
    } else {
        None
    }
}

/// POST → Success latency at `rate` actions/s for `seconds`, awaited at `to`.
pub async fn latency(rate: u64, seconds: u64, workers: usize, to: Probe) -> Result<Value> {
    let rig = Rig::start_with(Options {
        workers,
        stream: to == Probe::Ws,
        ..Options::default()
    })
    .await?;
    // The server runs on this runtime, the load generator on its own.
    crate::rig::on_load_runtime(measure(rig, rate, seconds, workers, to)).await
}

/// The load and the measurement of [`latency`], on the load generator's runtime.
async fn measure(rig: Rig, rate: u64, seconds: u64, workers: usize, to: Probe) -> Result<Value> {
    let http = rig.client();
    let total = rate * seconds;
    let objects = 256usize;
    let mut services = vec![];
    for _ in 0..objects {
        services.push(rig.create_service(&http).await?);
    }
    let tracker: Arc<Mutex<Tracker>> = Default::default();
    let errors = Arc::new(AtomicU64::new(0));
    let done = {
        let (tracker, errors) = (tracker.clone(), errors.clone());
        move || tracker.lock().map_or(0, |t| t.measured()) + errors.load(Ordering::Relaxed) >= total
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds + 60);
    let collector = match to {
        Probe::Ws => {
            let (mut ws, _) = tokio_tungstenite::connect_async(rig.ws_url("/api/audit/v1/events"))
                .await
                .context("events websocket")?;
            let first = ws.next().await.context("auth frame")??;
            anyhow::ensure!(
                first.to_text().unwrap_or_default().contains("\"auth\""),
                "expected the auth frame, got {first:?}"
            );
            let tracker = tracker.clone();
            tokio::spawn(async move {
                while !done() {
                    match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
                        Ok(Some(Ok(Message::Text(t)))) => {
                            let seen = Instant::now();
                            let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                            if let (Some(u), Ok(mut t)) = (success_uuid(&v), tracker.lock()) {
                                t.succeeded(u, seen);
                            }
                        }
                        Ok(Some(Ok(_))) => {}
                        Ok(Some(Err(_)) | None) => break,
                        Err(_) if tokio::time::Instant::now() > deadline => break,
                        Err(_) => {}
                    }
                }
            })
        }
        Probe::Updates => {
            let mut updates = rig.broker.subscribe_updates().await?;
            let tracker = tracker.clone();
            tokio::spawn(async move {
                while !done() {
                    match tokio::time::timeout(Duration::from_millis(200), updates.next()).await {
                        Ok(Some(Ok(u))) => {
                            let seen = Instant::now();
                            for e in u.events() {
                                if e.object_type == "action" && e.state == "Success" {
                                    if let Ok(mut t) = tracker.lock() {
                                        t.succeeded(e.uuid.clone(), seen);
                                    }
                                }
                            }
                        }
                        Ok(Some(Err(_))) => {}
                        Ok(None) => break,
                        Err(_) if tokio::time::Instant::now() > deadline => break,
                        Err(_) => {}
                    }
                }
            })
        }
    };
    let accepted_latency = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let authorization = rig.authorization();
    let stages = Stages::now();
    let cpu = CpuTimes::now();
    let start = Instant::now();
    for i in 0..total {
        ticker.tick().await;
        let (http, tracker, errors) = (http.clone(), tracker.clone(), errors.clone());
        let accepted_latency = accepted_latency.clone();
        let url = format!(
            "{}/api/app/v1/service/{}/noop/",
            rig.url,
            services[i as usize % objects]
        );
        let auth = authorization.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            let request = http.post(&url).header(reqwest::header::AUTHORIZATION, auth);
            let accepted = match request.send().await {
                Ok(r) if r.status().as_u16() == 202 => r.json::<Value>().await.ok(),
                _ => None,
            };
            if let Ok(mut h) = accepted_latency.lock() {
                let _ = h.record(t0.elapsed().as_micros() as u64);
            }
            match accepted.as_ref().and_then(|v| v["uuid"].as_str()) {
                Some(u) => {
                    if let Ok(mut t) = tracker.lock() {
                        t.accepted(u.to_string(), t0);
                    }
                }
                None => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let offered = start.elapsed();
    collector.await?;
    let cpu = cpu.until(&CpuTimes::now());
    let stages = stages.until(&Stages::now());
    rig.stop().await;
    let h = tracker
        .lock()
        .ok()
        .and_then(|mut t| t.histogram.take())
        .unwrap_or_else(|| Histogram::new(3).expect("histogram"));
    Ok(json!({
        "scenario": "latency", "offered_rate": rate, "seconds": seconds, "workers": workers,
        "offered_actual_per_sec": total as f64 / offered.as_secs_f64(),
        "errors": errors.load(Ordering::Relaxed), "stages": stages, "cpu_seconds": cpu,
        "post_to_success_event": percentiles(&h),
        "post_to_202": accepted_latency.lock().map(|h| percentiles(&h)).unwrap_or_default(),
        "measured_at": match to {
            Probe::Ws => "an events websocket client (/api/audit/v1/events) of the API's stream routes",
            Probe::Updates => "the updates exchange (the stream hub's input)",
        },
    }))
}
