//! Stevedore's benchmarks. Each scenario starts what it needs in this process
//! (API on a loopback port, workers, a fresh PostgreSQL database and broker
//! prefix), drives it over real HTTP, and prints one JSON object.
//!
//! ```text
//! cargo run --release --bin bench -- list --actions 1000000
//! cargo run --release --bin bench -- submit --requests 20000 --clients 64
//! cargo run --release --bin bench -- e2e --actions 20000 --workers 2
//! cargo run --release --bin bench -- latency --rate 1000 --seconds 10
//! ```
//!
//! `--smoke` shrinks every size so CI can check that the benchmarks still run
//! (seconds, no assertions on speed). Results go to BENCHMARKS.md.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stevedore_api::ApiState;
use stevedore_shared::auth::{generate_api_key, hash_api_key};
use stevedore_shared::broker::amqp::AmqpBroker;
use stevedore_shared::broker::{Broker, BrokerNames, DynBroker};
use stevedore_shared::config::{FileConfig, Operations, WorkerSettings};
use stevedore_shared::dispatch::{Dispatcher, OutboxRelay};
use stevedore_shared::messages::Update;
use stevedore_shared::shutdown::Shutdown;
use stevedore_shared::store;
use stevedore_shared::testing::{amqp_url, unique_prefix, TestDatabase};
use stevedore_worker::Worker;

/// Stevedore benchmarks (JSON on stdout, progress on stderr).
#[derive(Debug, Parser)]
#[command(name = "bench", about)]
struct Cli {
    /// Tiny sizes: checks that the scenario runs, measures nothing useful.
    #[arg(long, global = true)]
    smoke: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// GET /api/audit/v1/action/ with each filter over a seeded table.
    List {
        /// Actions to seed.
        #[arg(long, default_value_t = 1_000_000)]
        actions: i64,
        /// Requests per query shape.
        #[arg(long, default_value_t = 50)]
        requests: usize,
    },
    /// Accepted actions per second (202 returned: committed, publish confirmed).
    Submit {
        /// Requests in all.
        #[arg(long, default_value_t = 20_000)]
        requests: u64,
        /// Concurrent HTTP clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
    },
    /// noop actions completed per second end to end.
    E2e {
        /// Actions in all.
        #[arg(long, default_value_t = 20_000)]
        actions: u64,
        /// Concurrent HTTP clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Worker instances.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// POST → Success update latency at a fixed offered rate.
    Latency {
        /// Offered rate, actions per second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// How long to offer it.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Worker instances.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
}

/// Operations of every benchmark: one `noop` per object type is enough.
const BENCH_CONFIG: &str = r#"
[worker]
concurrency = 256
[[operation]]
object = "service"
verb = "noop"
handler = "noop"
"#;

/// A running in-process deployment on PostgreSQL + RabbitMQ.
struct Rig {
    url: String,
    auth: (String, String),
    broker: Arc<AmqpBroker>,
    dispatcher: Dispatcher,
    ops: Arc<Operations>,
    shutdown: Shutdown,
    _db: TestDatabase,
}

impl Rig {
    async fn start(workers: usize) -> Result<Rig> {
        let db = TestDatabase::create().await;
        let store = store::connect(db.url()).await?;
        store.migrate().await?;
        let broker =
            Arc::new(AmqpBroker::connect(&amqp_url(), BrokerNames::new(unique_prefix("bench"))).await?);
        broker.declare().await?;
        let dyn_broker: DynBroker = broker.clone();
        let dispatcher = Dispatcher::new(store.clone(), dyn_broker);
        let file = FileConfig::parse(BENCH_CONFIG)?;
        let ops = Arc::new(file.operations()?);
        store.create_user("bench", &[]).await?;
        let key = generate_api_key();
        store.add_api_key("bench", &hash_api_key(&key)).await?;
        let shutdown = Shutdown::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = stevedore_api::router(ApiState {
            trust_forwarded_for: false,
            geoip: None,
            ..ApiState::new(dispatcher.clone(), ops.clone())
        });
        tokio::spawn(stevedore_api::serve(listener, app, shutdown.clone()));
        tokio::spawn(OutboxRelay::new(dispatcher.clone()).run(shutdown.clone()));
        let rig = Rig {
            url,
            auth: ("bench".into(), key),
            broker,
            dispatcher,
            ops,
            shutdown,
            _db: db,
        };
        for _ in 0..workers {
            rig.add_worker(file.worker.clone());
        }
        Ok(rig)
    }

    fn add_worker(&self, settings: WorkerSettings) {
        let w = Worker::new(self.dispatcher.clone(), self.ops.clone(), settings);
        tokio::spawn(w.run(self.shutdown.clone()));
    }

    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .build()
            .expect("http client")
    }

    async fn create_service(&self, http: &reqwest::Client) -> Result<String> {
        let v: Value = http
            .post(format!("{}/api/app/v1/service/", self.url))
            .basic_auth(&self.auth.0, Some(&self.auth.1))
            .body(r#"{"name":"bench"}"#)
            .send()
            .await?
            .json()
            .await?;
        Ok(v["uuid"].as_str().context("service uuid")?.to_string())
    }

    async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = self.broker.delete_topology().await;
    }
}

fn percentiles(h: &Histogram<u64>) -> Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({ "p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999), "max_ms": h.max() as f64 / 1000.0, "count": h.len() })
}

/// Posts `total` noop actions from `clients` concurrent clients, each on its
/// own object (so none waits as Pending). Returns (accepted, errors, elapsed).
async fn submit_load(rig: &Rig, total: u64, clients: usize) -> Result<(u64, u64, Duration, Histogram<u64>)> {
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

async fn submit(requests: u64, clients: usize) -> Result<Value> {
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

async fn e2e(actions: u64, clients: usize, workers: usize) -> Result<Value> {
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

async fn latency(rate: u64, seconds: u64, workers: usize) -> Result<Value> {
    let rig = Rig::start(workers).await?;
    let http = rig.client();
    let total = rate * seconds;
    let objects = 256usize;
    let mut services = vec![];
    for _ in 0..objects {
        services.push(rig.create_service(&http).await?);
    }
    // Action uuid → when its POST was sent.
    let sent: Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>> = Default::default();
    let mut updates = rig.broker.subscribe_updates().await?;
    let sent2 = sent.clone();
    let collector = tokio::spawn(async move {
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds + 60);
        while (h.len()) < total {
            match tokio::time::timeout_at(deadline, updates.next()).await {
                Ok(Some(Ok(Update::Event(e)))) if e.object_type == "action" && e.state == "Success" => {
                    let t0 = sent2.lock().ok().and_then(|mut m| m.remove(&e.uuid));
                    if let Some(t0) = t0 {
                        let _ = h.record(t0.elapsed().as_micros() as u64);
                    }
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        h
    });
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    for i in 0..total {
        ticker.tick().await;
        let (http, sent, errors) = (http.clone(), sent.clone(), errors.clone());
        let url = format!(
            "{}/api/app/v1/service/{}/noop/",
            rig.url,
            services[i as usize % objects]
        );
        let auth = rig.auth.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            match http.post(&url).basic_auth(&auth.0, Some(&auth.1)).send().await {
                Ok(r) if r.status().as_u16() == 202 => {
                    if let Ok(v) = r.json::<Value>().await {
                        if let (Some(u), Ok(mut m)) = (v["uuid"].as_str(), sent.lock()) {
                            m.insert(u.to_string(), t0);
                        }
                    }
                }
                _ => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let offered = start.elapsed();
    let h = collector.await?;
    rig.stop().await;
    Ok(json!({
        "scenario": "latency", "offered_rate": rate, "seconds": seconds, "workers": workers,
        "offered_actual_per_sec": total as f64 / offered.as_secs_f64(),
        "errors": errors.load(Ordering::Relaxed),
        "post_to_success_event": percentiles(&h),
        "note": "measured to the Success event on the updates exchange (the stream service's input)",
    }))
}

async fn list(actions: i64, requests: usize) -> Result<Value> {
    let rig = Rig::start(0).await?;
    let pool = sqlx::PgPool::connect(rig._db.url()).await?;
    eprintln!("seeding {actions} actions…");
    let t = Instant::now();
    // 10,000 objects in 1,000 stacks; actions spread over a year, mostly final.
    sqlx::query(
        "INSERT INTO objects (uuid, namespace, object_type, resource_uri, name, state, parents, attributes, created_at, updated_at) \
         SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'bench', \
                CASE WHEN i % 10 = 0 THEN 'stack' ELSE 'service' END, \
                '/api/app/v1/bench/' || CASE WHEN i % 10 = 0 THEN 'stack' ELSE 'service' END || '/00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0') || '/', \
                'o' || i, 'Running', \
                CASE WHEN i % 10 = 0 THEN '[]'::jsonb ELSE jsonb_build_array('/api/app/v1/bench/stack/00000000-0000-4000-8000-' || lpad(to_hex(i - i % 10), 12, '0') || '/') END, \
                '{}', now(), now() \
         FROM generate_series(0, 9999) AS i",
    )
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO actions (uuid, namespace, action, object, object_uuid, object_type, object_parents, verb, method, path, body, \
                              ip, location, user_name, user_agent, is_user_action, state, start_date, end_date, claims) \
         SELECT gen_random_uuid(), CASE WHEN i % 20 = 0 THEN 'other' ELSE 'bench' END, 'Service Noop', \
                '/api/app/v1/bench/service/00000000-0000-4000-8000-' || lpad(to_hex(i % 10000), 12, '0') || '/', \
                ('00000000-0000-4000-8000-' || lpad(to_hex(i % 10000), 12, '0'))::uuid, 'service', '[]', 'noop', 'POST', '/', '', \
                '127.0.0.1', '', 'bench', 'bench', true, \
                (ARRAY['Success','Success','Success','Failed','Canceled'])[1 + i % 5], \
                now() - ((1000000 - i) * interval '30 seconds'), now() - ((1000000 - i) * interval '30 seconds') + interval '5 seconds', 1 \
         FROM generate_series(1, $1) AS i",
    )
    .bind(actions)
    .execute(&pool)
    .await?;
    sqlx::query("ANALYZE").execute(&pool).await?;
    let seed_seconds = t.elapsed().as_secs_f64();
    eprintln!("seeded in {seed_seconds:.1}s");
    let some_uuid: String =
        sqlx::query_scalar("SELECT uuid::text FROM actions WHERE namespace = 'bench' LIMIT 1 OFFSET 1000")
            .fetch_one(&pool)
            .await?;
    let svc = "/api/app/v1/bench/service/00000000-0000-4000-8000-000000000007/";
    let stack = "/api/app/v1/bench/stack/00000000-0000-4000-8000-000000000000/";
    let shapes: Vec<(&str, String)> = vec![
        ("no filter (first page)", String::new()),
        ("state=Failed", "state=Failed".into()),
        ("uuid", format!("uuid={some_uuid}")),
        (
            "uuid__startswith (8 chars)",
            format!("uuid__startswith={}", &some_uuid[..8]),
        ),
        ("object", format!("object={svc}")),
        (
            "object + include_related (stack)",
            format!("object={stack}&include_related=true"),
        ),
        (
            "start_date window (1 day)",
            "start_date__gte=2026-01-01T00:00:00Z&start_date__lte=2026-01-02T00:00:00Z".into(),
        ),
        ("deep page (offset 100000)", "offset=100000".into()),
    ];
    let http = rig.client();
    let mut results = vec![];
    for (name, q) in shapes {
        let mut h = Histogram::<u64>::new(3)?;
        let mut total = 0;
        for _ in 0..requests {
            let t = Instant::now();
            let v: Value = http
                .get(format!("{}/api/audit/v1/action/?{q}", rig.url))
                .basic_auth(&rig.auth.0, Some(&rig.auth.1))
                .send()
                .await?
                .json()
                .await?;
            h.record(t.elapsed().as_micros() as u64)?;
            total = v["meta"]["total_count"].as_i64().unwrap_or(-1);
        }
        eprintln!("{name}: p50 {:.1} ms", h.value_at_quantile(0.5) as f64 / 1000.0);
        results.push(json!({ "query": name, "total_count": total, "latency": percentiles(&h) }));
    }
    pool.close().await;
    rig.stop().await;
    Ok(
        json!({ "scenario": "list", "actions": actions, "requests_per_query": requests, "seed_seconds": seed_seconds, "queries": results }),
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let s = cli.smoke;
    let out = match cli.scenario {
        Scenario::List { actions, requests } => {
            list(if s { 2000 } else { actions }, if s { 2 } else { requests }).await?
        }
        Scenario::Submit { requests, clients } => {
            submit(if s { 200 } else { requests }, if s { 4 } else { clients }).await?
        }
        Scenario::E2e {
            actions,
            clients,
            workers,
        } => {
            e2e(
                if s { 200 } else { actions },
                if s { 4 } else { clients },
                workers,
            )
            .await?
        }
        Scenario::Latency {
            rate,
            seconds,
            workers,
        } => latency(if s { 50 } else { rate }, if s { 1 } else { seconds }, workers).await?,
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
