//! `queues`: the broker's own ceiling, one job queue against several.
//!
//! Every action passes through a job queue, so one quorum queue (one Raft
//! group, led by one node) bounds the whole system. This publishes job
//! messages of one action each with confirms, from `--publishers` tasks,
//! through [`AmqpBroker::publish_jobs`] (the API's and relay's path), while
//! `--consumers` consumers ([`Broker::consume_jobs`], the workers' path) ack
//! them, and reports confirmed and consumed messages per second. `--url`
//! may list a cluster's nodes (the rig's: scripts/cluster.sh prints them).

use anyhow::Result;
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stevedore_broker::amqp::AmqpBroker;
use stevedore_core::broker::{Broker, BrokerNames};
use stevedore_core::messages::JobMessage;

/// What to measure.
#[derive(Debug, clap::Args)]
pub struct QueuesArgs {
    /// RabbitMQ URL(s), comma-separated (default: STEVEDORE_TEST_AMQP_URL
    /// or the local broker).
    #[arg(long)]
    url: Option<String>,
    /// Job queues to spread over.
    #[arg(long, default_value_t = 1)]
    queues: u16,
    /// Messages in all.
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// Publishing tasks, each publishing `--batch` messages per call.
    #[arg(long, default_value_t = 8)]
    publishers: u64,
    /// Messages per `publish_jobs` call (confirms awaited per call).
    #[arg(long, default_value_t = 64)]
    batch: u64,
    /// Consumers (each with a channel per queue), as workers would have.
    #[arg(long, default_value_t = 3)]
    consumers: u64,
    /// Prefetch of each consumer, shared over its queues.
    #[arg(long, default_value_t = 256)]
    prefetch: u16,
}

pub async fn queues(a: QueuesArgs) -> Result<Value> {
    let url = a.url.clone().unwrap_or_else(|| {
        std::env::var("STEVEDORE_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
    });
    let prefix = format!("stv-queues-{}", uuid::Uuid::new_v4().simple());
    let names = BrokerNames::new(prefix).with_job_queues(a.queues);
    let broker = Arc::new(AmqpBroker::connect(&url, names).await?);
    broker.declare().await?;
    let outcome = run(&a, broker.clone()).await;
    broker.delete_topology().await?;
    outcome
}

async fn run(a: &QueuesArgs, broker: Arc<AmqpBroker>) -> Result<Value> {
    let consumed = Arc::new(AtomicU64::new(0));
    let mut consumers = vec![];
    for _ in 0..a.consumers {
        let mut stream = broker.consume_jobs(a.prefetch).await?;
        let (consumed, total) = (consumed.clone(), a.messages);
        consumers.push(tokio::spawn(async move {
            while consumed.load(Ordering::Relaxed) < total {
                match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
                    Ok(Some(Ok(d))) => {
                        let _ = d.acker.ack().await;
                        consumed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => break,
                    Err(_) => {}
                }
            }
        }));
    }
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut publishers = vec![];
    for _ in 0..a.publishers {
        let (broker, next, total, batch) = (broker.clone(), next.clone(), a.messages, a.batch);
        publishers.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(batch, Ordering::Relaxed);
                if from >= total {
                    return Ok::<_, anyhow::Error>(());
                }
                let n = batch.min(total - from);
                let jobs: Vec<JobMessage> = (0..n).map(|_| JobMessage::one(uuid::Uuid::new_v4())).collect();
                broker.publish_jobs(&jobs).await?;
            }
        }));
    }
    for p in publishers {
        p.await??;
    }
    let published_in = start.elapsed();
    for c in consumers {
        let _ = tokio::time::timeout(Duration::from_secs(120), c).await;
    }
    let consumed_in = start.elapsed();
    let consumed = consumed.load(Ordering::Relaxed);
    anyhow::ensure!(
        consumed >= a.messages,
        "only {consumed} of {} consumed",
        a.messages
    );
    Ok(json!({
        "scenario": "queues",
        "queues": a.queues,
        "messages": a.messages,
        "publishers": a.publishers,
        "batch": a.batch,
        "consumers": a.consumers,
        "confirmed_per_second": (a.messages as f64 / published_in.as_secs_f64()).round(),
        "consumed_per_second": (a.messages as f64 / consumed_in.as_secs_f64()).round(),
    }))
}
