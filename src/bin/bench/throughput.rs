//! `submit` and `e2e`: accepted and completed actions per second.

use crate::rig::{percentiles, Rig};
use anyhow::Result;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stevedore_shared::broker::amqp::AmqpBroker;
use stevedore_shared::broker::Broker;
use stevedore_shared::messages::Update;

/// Posts `total` noop actions from `clients` concurrent clients, each on its
/// own object (so none waits as Pending). Returns (accepted, errors, elapsed).
pub async fn submit_load(
    rig: &Rig,
    total: u64,
    clients: usize,
) -> Result<(u64, u64, Duration, Histogram<u64>)> {
    let http = rig.client();
    let mut services = Vec::with_capacity(clients);
    for _ in 0..clients {
        services.push(rig.create_service(&http).await?);
    }
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = vec![];
    for svc in services {
        let (http, next, errors) = (http.clone(), next.clone(), errors.clone());
        let url = format!("{}/api/app/v1/service/{svc}/noop/", rig.url);
        let auth = rig.auth.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let t = Instant::now();
                match http.post(&url).basic_auth(&auth.0, Some(&auth.1)).send().await {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let _ = r.bytes().await;
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let _ = h.record(t.elapsed().as_micros() as u64);
            }
            h
        }));
    }
    let mut all = Histogram::<u64>::new(3)?;
    for t in tasks {
        all.add(t.await?)?;
    }
    let elapsed = start.elapsed();
    let errors = errors.load(Ordering::Relaxed);
    Ok((total - errors, errors, elapsed, all))
}

/// Accepted actions per second from `clients` concurrent clients.
pub async fn submit(requests: u64, clients: usize) -> Result<Value> {
    let rig = Rig::start(0).await?;
    let (accepted, errors, elapsed, h) = submit_load(&rig, requests, clients).await?;
    rig.stop().await;
    Ok(json!({
        "scenario": "submit", "requests": requests, "clients": clients, "accepted": accepted, "errors": errors,
        "seconds": elapsed.as_secs_f64(), "accepted_per_sec": accepted as f64 / elapsed.as_secs_f64(),
        "request_latency": percentiles(&h),
    }))
}

/// Counts Success events on the updates exchange until `n` arrived.
async fn count_successes(broker: &AmqpBroker, n: u64, timeout: Duration) -> Result<u64> {
    let mut updates = broker.subscribe_updates().await?;
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + timeout;
    while seen < n {
        match tokio::time::timeout_at(deadline, updates.next()).await {
            Ok(Some(Ok(Update::Event(e)))) if e.object_type == "action" && e.state == "Success" => seen += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    Ok(seen)
}

/// noop actions completed per second with `workers` workers.
pub async fn e2e(actions: u64, clients: usize, workers: usize) -> Result<Value> {
    let rig = Rig::start(workers).await?;
    let broker = rig.broker.clone();
    let counter =
        tokio::spawn(async move { count_successes(&broker, actions, Duration::from_secs(600)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let (accepted, errors, submit_elapsed, _) = submit_load(&rig, actions, clients).await?;
    let done = counter.await??;
    let elapsed = start.elapsed();
    rig.stop().await;
    Ok(json!({
        "scenario": "e2e", "actions": actions, "clients": clients, "workers": workers, "accepted": accepted,
        "errors": errors, "completed": done, "seconds": elapsed.as_secs_f64(),
        "submit_seconds": submit_elapsed.as_secs_f64(),
        "completed_per_sec": done as f64 / elapsed.as_secs_f64(),
    }))
}
