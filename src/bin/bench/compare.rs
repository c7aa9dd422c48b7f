//! `compare`: Stevedore's `e2e` and the Celery peer (`bench/peers/run.sh`)
//! on the same RabbitMQ, one after the other, with the ratios. The peer runs
//! twice: with publisher confirms on every enqueue (the guarantee behind
//! Stevedore's 202) and with Celery's default (no confirms).

use crate::throughput;
use anyhow::{Context, Result};
use serde_json::{json, Value};

/// The peer's launcher, relative to the workspace root.
const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/peers/run.sh");

/// Runs `e2e` with `actions` actions, then the Celery peer with as many
/// tasks and `concurrency` worker processes; `peer: false` skips Celery.
pub async fn compare(
    actions: u64,
    clients: usize,
    workers: usize,
    concurrency: usize,
    peer: bool,
) -> Result<Value> {
    let ours = throughput::e2e(actions, clients, workers, 0).await?;
    if !peer {
        return Ok(json!({ "scenario": "compare", "stevedore": ours, "celery": "skipped" }));
    }
    let ours_accepted =
        ours["accepted"].as_f64().unwrap_or(0.0) / ours["submit_seconds"].as_f64().unwrap_or(f64::NAN);
    let ours_completed = ours["completed_per_sec"].as_f64().unwrap_or(0.0);
    let ratio = |a: f64, b: Option<f64>| b.filter(|b| *b > 0.0).map(|b| a / b);
    let mut peers = vec![];
    for confirm in [true, false] {
        let celery = run_peer(actions, concurrency, confirm).await?;
        peers.push(json!({
            "celery": celery,
            "ratio_accepted_over_enqueued": ratio(ours_accepted, celery["enqueued_per_sec"].as_f64()),
            "ratio_completed": ratio(ours_completed, celery["completed_per_sec"].as_f64()),
        }));
    }
    Ok(json!({
        "scenario": "compare",
        "stevedore": ours,
        "stevedore_accepted_per_sec": ours_accepted,
        "celery_with_confirms": peers[0],
        "celery_default": peers[1],
    }))
}

/// One run of the peer; its JSON is the last line of its output.
async fn run_peer(tasks: u64, concurrency: usize, confirm: bool) -> Result<Value> {
    eprintln!("running the Celery peer ({PEER}, confirms: {confirm})…");
    let out = tokio::process::Command::new(PEER)
        .args([
            "--tasks",
            &tasks.to_string(),
            "--concurrency",
            &concurrency.to_string(),
        ])
        .arg(if confirm { "--confirm" } else { "--no-confirm" })
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("running {PEER}"))?;
    anyhow::ensure!(out.status.success(), "{PEER} failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .with_context(|| format!("peer output: {text}"))
}
