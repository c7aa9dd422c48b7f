//! `submit` and `e2e`: accepted and completed actions per second.

use crate::rig::{percentiles, CpuTimes, Rig, Stages};
use anyhow::Result;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stevedore_broker::amqp::AmqpBroker;
use stevedore_core::broker::Broker;

/// The `noop` URLs of `objects` new services (`objects` = 0: one per
/// action, so that none waits as Pending behind another on its object).
pub async fn targets(rig: &Rig, total: u64, objects: u64, clients: usize) -> Result<Vec<String>> {
    let objects = if objects == 0 { total } else { objects }.max(1);
    Ok(rig
        .create_services(&rig.client(), objects as usize, clients)
        .await?
        .into_iter()
        .map(|svc| format!("{}/api/app/v1/service/{svc}/noop/", rig.url))
        .collect())
}

/// Posts `total` noop actions from `clients` concurrent clients, request `i`
/// to `urls[i % urls.len()]`. Returns (accepted, errors, elapsed, request
/// latency).
pub async fn submit_load(
    rig: &Rig,
    urls: Vec<String>,
    total: u64,
    clients: usize,
) -> Result<(u64, u64, Duration, Histogram<u64>)> {
    let http = rig.client();
    // Parsed and encoded once: the load generator's CPU counts against the
    // machine the server runs on.
    let urls: Vec<reqwest::Url> = urls.iter().map(|u| u.parse()).collect::<Result<_, _>>()?;
    let urls = Arc::new(urls);
    let auth = rig.authorization();
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = vec![];
    for _ in 0..clients {
        let (http, next, errors, urls) = (http.clone(), next.clone(), errors.clone(), urls.clone());
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let url = urls[(i % urls.len() as u64) as usize].clone();
                let t = Instant::now();
                let request = http
                    .post(url)
                    .header(reqwest::header::AUTHORIZATION, auth.clone());
                match request.send().await {
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
pub async fn submit(requests: u64, clients: usize, objects: u64) -> Result<Value> {
    let rig = Rig::start(0).await?;
    let urls = targets(&rig, requests, objects, clients).await?;
    let cpu = CpuTimes::now();
    let stages = Stages::now();
    let (accepted, errors, elapsed, h) = submit_load(&rig, urls, requests, clients).await?;
    let cpu = cpu.until(&CpuTimes::now());
    let stages = stages.until(&Stages::now());
    rig.stop().await;
    Ok(json!({
        "scenario": "submit", "requests": requests, "clients": clients, "objects": objects,
        "accepted": accepted, "errors": errors,
        "seconds": elapsed.as_secs_f64(), "accepted_per_sec": accepted as f64 / elapsed.as_secs_f64(),
        "request_latency": percentiles(&h), "cpu_seconds": cpu, "stages": stages,
    }))
}

/// Counts Success events on the updates exchange until `n` arrived.
async fn count_successes(broker: &AmqpBroker, n: u64, timeout: Duration) -> Result<u64> {
    let mut updates = broker.subscribe_updates().await?;
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + timeout;
    while seen < n {
        match tokio::time::timeout_at(deadline, updates.next()).await {
            Ok(Some(Ok(u))) => {
                seen += u
                    .events()
                    .iter()
                    .filter(|e| e.object_type == "action" && e.state == "Success")
                    .count() as u64
            }
            Ok(Some(Err(_))) => {}
            Ok(None) | Err(_) => break,
        }
    }
    Ok(seen)
}

/// noop actions completed per second with `workers` workers.
pub async fn e2e(actions: u64, clients: usize, workers: usize, objects: u64) -> Result<Value> {
    let rig = Rig::start(workers).await?;
    let urls = targets(&rig, actions, objects, clients).await?;
    let broker = rig.broker.clone();
    let counter =
        tokio::spawn(async move { count_successes(&broker, actions, Duration::from_secs(600)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu = CpuTimes::now();
    let stages = Stages::now();
    let start = Instant::now();
    let (accepted, errors, submit_elapsed, _) = submit_load(&rig, urls, actions, clients).await?;
    let done = counter.await??;
    let elapsed = start.elapsed();
    let cpu = cpu.until(&CpuTimes::now());
    let stages = stages.until(&Stages::now());
    rig.stop().await;
    Ok(json!({
        "scenario": "e2e", "cpu_seconds": cpu, "stages": stages, "actions": actions, "clients": clients, "workers": workers, "objects": objects,
        "accepted": accepted,
        "errors": errors, "completed": done, "seconds": elapsed.as_secs_f64(),
        "submit_seconds": submit_elapsed.as_secs_f64(),
        "completed_per_sec": done as f64 / elapsed.as_secs_f64(),
    }))
}
