//! The deployment every scenario runs against, and shared helpers.

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use sqlx::migrate::MigrateDatabase;
use std::sync::Arc;
use std::time::Duration;
use stevedore_api::ApiState;
use stevedore_broker::amqp::AmqpBroker;
use stevedore_core::auth::{generate_api_key, hash_api_key};
use stevedore_core::broker::{Broker, BrokerNames, DynBroker};
use stevedore_core::config::{FileConfig, Operations, WorkerSettings};
use stevedore_core::dispatch::{Dispatcher, OutboxRelay};
use stevedore_core::shutdown::Shutdown;
use stevedore_worker::Worker;

/// Operations of every benchmark: `noop` on a service (and `lines`, added
/// by [`bench_config`], for the log scenario).
pub const BENCH_CONFIG: &str = r#"
[worker]
concurrency = 256
[[operation]]
object = "service"
verb = "noop"
handler = "noop"
"#;

/// [`BENCH_CONFIG`] plus `service lines`: an `exec` of `seq 1 <lines>`.
pub fn bench_config(lines: u64) -> String {
    format!(
        "{BENCH_CONFIG}[[operation]]\nobject = \"service\"\nverb = \"lines\"\nexec = [\"seq\", \"1\", \"{lines}\"]\n"
    )
}

/// `--batch-interval-ms`, when given.
static BATCH_INTERVAL: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// Sets the batch interval every rig uses instead of the configured one.
pub fn set_batch_interval(interval: Duration) {
    let _ = BATCH_INTERVAL.set(interval);
}

/// What a [`Rig`] runs besides the API and the outbox relay.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Worker instances in this process.
    pub workers: usize,
    /// Serve the websocket stream routes on the API's listener (and run the
    /// stream hub's subscription), as `stevedore api --with-stream` does.
    pub stream: bool,
    /// Lines printed by the `lines` operation.
    pub lines: u64,
}

/// A running in-process deployment on PostgreSQL + RabbitMQ.
pub struct Rig {
    /// Base URL of the API (`http://127.0.0.1:<port>`).
    pub url: String,
    /// The benchmark user's name and API key.
    pub auth: (String, String),
    /// The broker, under this run's own prefix.
    pub broker: Arc<AmqpBroker>,
    /// Store + broker, shared with the workers.
    pub dispatcher: Dispatcher,
    /// The operations of [`BENCH_CONFIG`].
    pub ops: Arc<Operations>,
    /// Stops the API, relay and workers.
    pub shutdown: Shutdown,
    /// This run's throwaway database (dropped with the rig).
    pub db: BenchDatabase,
}

impl Rig {
    /// Starts the API, the outbox relay and `workers` workers on a fresh database.
    pub async fn start(workers: usize) -> Result<Rig> {
        Rig::start_with(Options {
            workers,
            ..Options::default()
        })
        .await
    }

    /// Starts a rig as `o` says.
    pub async fn start_with(o: Options) -> Result<Rig> {
        let db = BenchDatabase::create().await?;
        let store = stevedore_store::connect(db.url()).await?;
        store.migrate().await?;
        let amqp = std::env::var("STEVEDORE_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let prefix = format!("stv-bench-{}", uuid::Uuid::new_v4().simple());
        let broker = Arc::new(AmqpBroker::connect(&amqp, BrokerNames::new(prefix)).await?);
        broker.declare().await?;
        let dyn_broker: DynBroker = broker.clone();
        let file = FileConfig::parse(&bench_config(o.lines.max(1)))?;
        let interval = BATCH_INTERVAL
            .get()
            .copied()
            .unwrap_or(file.database.batch_interval);
        let dispatcher = Dispatcher::new(store.clone(), dyn_broker).with_batch_interval(interval);
        let ops = Arc::new(file.operations()?);
        store.create_user("bench", &[]).await?;
        let key = generate_api_key();
        store.add_api_key("bench", &hash_api_key(&key)).await?;
        let shutdown = Shutdown::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = ApiState::new(dispatcher.clone(), ops.clone());
        let app = if o.stream {
            stevedore_api::router_with_stream(state, &shutdown)
        } else {
            stevedore_api::router(state)
        };
        let serving = shutdown.clone();
        tokio::spawn(async move {
            let limits = stevedore_core::config::HttpSettings::default();
            stevedore_api::serve(listener, app, &limits, serving).await
        });
        tokio::spawn(OutboxRelay::new(dispatcher.clone()).run(shutdown.clone()));
        let rig = Rig {
            url,
            auth: ("bench".into(), key),
            broker,
            dispatcher,
            ops,
            shutdown,
            db,
        };
        for _ in 0..o.workers {
            rig.add_worker(file.worker.clone());
        }
        Ok(rig)
    }

    /// Starts one more worker in this process, with what a `stevedore
    /// worker` process runs beside it (the webhook relay and sender, idle
    /// without webhooks but polling), so a worker costs what it does in
    /// production.
    pub fn add_worker(&self, settings: WorkerSettings) {
        let w = Worker::new(self.dispatcher.clone(), self.ops.clone(), settings);
        tokio::spawn(w.run(self.shutdown.clone()));
        stevedore_worker::webhooks::spawn(
            self.dispatcher.store().clone(),
            stevedore_core::config::WebhookSettings::default(),
            self.shutdown.clone(),
        );
    }

    /// An HTTP client with a large connection pool.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .build()
            .expect("http client")
    }

    /// The `Authorization` header of the benchmark user (Basic), encoded once.
    pub fn authorization(&self) -> reqwest::header::HeaderValue {
        let basic = stevedore_core::auth::basic_authorization(&self.auth.0, &self.auth.1);
        let mut value =
            reqwest::header::HeaderValue::from_str(&basic).expect("base64 is a valid header value");
        value.set_sensitive(true);
        value
    }

    /// Creates a service and returns its uuid.
    pub async fn create_service(&self, http: &reqwest::Client) -> Result<String> {
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

    /// Creates `n` services, `concurrency` requests at a time; their uuids.
    pub async fn create_services(
        &self,
        http: &reqwest::Client,
        n: usize,
        concurrency: usize,
    ) -> Result<Vec<String>> {
        use futures::{StreamExt, TryStreamExt};
        futures::stream::iter(0..n)
            .map(|_| self.create_service(http))
            .buffered(concurrency.max(1))
            .try_collect()
            .await
    }

    /// The websocket URL of `path` on the API, authenticated by query string.
    pub fn ws_url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!(
            "{}{path}{sep}user={}&token={}",
            self.url.replacen("http://", "ws://", 1),
            self.auth.0,
            self.auth.1
        )
    }

    /// Posts `verb` on service `svc`; returns the action's uuid (202 only).
    pub async fn post_verb(&self, http: &reqwest::Client, svc: &str, verb: &str) -> Result<String> {
        let r = http
            .post(format!("{}/api/app/v1/service/{svc}/{verb}/", self.url))
            .basic_auth(&self.auth.0, Some(&self.auth.1))
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 202, "POST {verb}: status {}", r.status());
        let v: Value = r.json().await?;
        Ok(v["uuid"].as_str().context("action uuid")?.to_string())
    }

    /// Stops everything and deletes the broker topology.
    pub async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = self.broker.delete_topology().await;
    }
}

/// A PostgreSQL database of one run's own, on the server
/// `STEVEDORE_TEST_PG_URL` names (by default the local one, as user
/// `postgres`), dropped when this value is. The tests' `TestDatabase` does
/// the same, but test support is not built into the binaries.
pub struct BenchDatabase {
    url: String,
}

impl BenchDatabase {
    async fn create() -> Result<BenchDatabase> {
        let server = std::env::var("STEVEDORE_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let mut url = reqwest::Url::parse(&server).context("STEVEDORE_TEST_PG_URL")?;
        url.set_path(&format!("stevedore_bench_{}", uuid::Uuid::new_v4().simple()));
        let url = url.to_string();
        sqlx::Postgres::create_database(&url)
            .await
            .context("creating the run's database (STEVEDORE_TEST_PG_URL)")?;
        Ok(BenchDatabase { url })
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for BenchDatabase {
    fn drop(&mut self) {
        let url = self.url.clone();
        // Dropped inside or outside a runtime: a thread with its own works in both.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(rt) = rt {
                let _ = rt.block_on(sqlx::Postgres::force_drop_database(&url));
            }
        })
        .join();
    }
}

/// p50 / p99 / p99.9 / max in milliseconds of a histogram of microseconds.
pub fn percentiles(h: &Histogram<u64>) -> Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({ "p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999), "max_ms": h.max() as f64 / 1000.0, "count": h.len() })
}

/// CPU time used so far by the processes that matter to a run, from
/// `/proc/<pid>/stat` (user + system, with the children they waited for):
/// PostgreSQL (every `postgres` process), RabbitMQ (`beam.smp`) and this
/// process. Empty where `/proc` cannot be read.
///
/// Where a scenario runs its load generator on [`load_runtime`], the
/// process's share is split: `load_generator` is that runtime's threads,
/// and `server` is what the system under test used — PostgreSQL, RabbitMQ
/// and the bench process without its load generator.
#[derive(Debug, Clone, Default)]
pub struct CpuTimes(std::collections::BTreeMap<&'static str, f64>);

impl CpuTimes {
    /// The times now.
    pub fn now() -> CpuTimes {
        let mut out = std::collections::BTreeMap::new();
        let me = std::process::id();
        for (pid, comm, seconds) in process_cpu() {
            let group = if pid == me {
                "bench"
            } else if comm.starts_with("postgres") {
                "postgresql"
            } else if comm.starts_with("beam") {
                "rabbitmq"
            } else {
                continue;
            };
            *out.entry(group).or_insert(0.0) += seconds;
        }
        if LOAD.get().is_some() {
            out.insert("load_generator", load_thread_cpu());
        }
        CpuTimes(out)
    }

    /// CPU seconds per group used between `self` and `later`, as JSON.
    pub fn until(&self, later: &CpuTimes) -> Value {
        let mut m = serde_json::Map::new();
        let used = |k: &str| later.0.get(k).copied().unwrap_or(0.0) - self.0.get(k).copied().unwrap_or(0.0);
        for k in later.0.keys() {
            m.insert((*k).to_string(), json!((used(k) * 100.0).round() / 100.0));
        }
        if later.0.contains_key("load_generator") {
            let server = used("bench") - used("load_generator") + used("postgresql") + used("rabbitmq");
            m.insert("server".to_string(), json!((server * 100.0).round() / 100.0));
        }
        Value::Object(m)
    }
}

/// The name of the load generator's threads (at most 15 bytes: Linux keeps
/// no more of a thread's name).
const LOAD_THREAD: &str = "bench-load";

static LOAD: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();

/// The load generator's own runtime (one thread named [`LOAD_THREAD`]), so
/// that [`CpuTimes`] tells its CPU from the server's: the clients' HTTP,
/// websocket and JSON work is not the system under test.
pub fn load_runtime() -> &'static tokio::runtime::Handle {
    LOAD.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(LOAD_THREAD)
            .enable_all()
            .build()
            .expect("the load generator's runtime")
    })
    .handle()
}

/// Runs `work` on [`load_runtime`] and waits for it.
pub async fn on_load_runtime<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    load_runtime().spawn(work).await?
}

/// CPU seconds used so far by this process's threads named [`LOAD_THREAD`]
/// (`/proc/self/task/<tid>/stat`; 0 where it cannot be read).
fn load_thread_cpu() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|stat| stat_cpu(&stat, false))
        .filter(|(comm, _)| comm.starts_with(LOAD_THREAD))
        .map(|(_, seconds)| seconds)
        .sum()
}

/// The command and the CPU seconds (user + system; `with_children`: also
/// of the children waited for) of a `/proc/…/stat` line.
fn stat_cpu(stat: &str, with_children: bool) -> Option<(String, f64)> {
    let ticks = 100.0; // USER_HZ on Linux
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    // Fields after the command: state is 3rd; utime, stime, cutime,
    // cstime are the 14th to 17th of the whole line.
    let rest: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let field = |i: usize| rest.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let mut seconds = field(14) + field(15);
    if with_children {
        seconds += field(16) + field(17);
    }
    Some((stat.get(open + 1..close)?.to_string(), seconds / ticks))
}

/// The server's own account of where a request's time went: the sums,
/// counts and (for times) bucket counts of the process's histograms (the rig
/// runs the API and the workers in this process), read from the metrics
/// recorder. [`Stages::until`] gives the means over an interval and, for
/// times, the bucket that holds the 99th percentile.
pub struct Stages(std::collections::BTreeMap<String, Histo>);

/// One histogram's totals over all its label sets.
#[derive(Debug, Clone, Default)]
struct Histo {
    sum: f64,
    count: f64,
    /// Cumulative count at or below each bucket's upper bound (seconds).
    buckets: std::collections::BTreeMap<u64, f64>,
}

/// A bucket bound as a map key: nanoseconds (`+Inf` sorts last).
fn bound_key(le: &str) -> u64 {
    le.parse::<f64>().map(|b| (b * 1e9) as u64).unwrap_or(u64::MAX)
}

/// The histograms [`Stages`] reports, by the name it reports them under.
const STAGES: &[(&str, &str)] = &[
    ("submit_batch_size", stevedore_core::dispatch::SUBMIT_BATCH_SIZE),
    ("submit_wait_ms", stevedore_core::dispatch::SUBMIT_WAIT_SECONDS),
    (
        "submit_commit_ms",
        stevedore_core::dispatch::SUBMIT_COMMIT_SECONDS,
    ),
    (
        "submit_confirm_ms",
        stevedore_core::dispatch::SUBMIT_CONFIRM_SECONDS,
    ),
    ("finish_batch_size", stevedore_worker::FINISH_BATCH_SIZE),
    ("finish_commit_ms", stevedore_worker::FINISH_COMMIT_SECONDS),
    (
        "http_request_ms",
        stevedore_api::ops::HTTP_REQUEST_DURATION_SECONDS,
    ),
];

impl Stages {
    /// The sums and counts now.
    pub fn now() -> Stages {
        let text = stevedore_api::ops::install_metrics().render();
        let mut out = std::collections::BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = key.split_once('{').unwrap_or((key, ""));
            for (_, metric) in STAGES {
                let entry: &mut Histo = out.entry(metric.to_string()).or_default();
                if name == format!("{metric}_sum") {
                    entry.sum += value;
                } else if name == format!("{metric}_count") {
                    entry.count += value;
                } else if name == format!("{metric}_bucket") {
                    let le = labels.split("le=\"").nth(1).and_then(|r| r.split('"').next());
                    if let Some(le) = le {
                        *entry.buckets.entry(bound_key(le)).or_default() += value;
                    }
                }
            }
        }
        Stages(out)
    }

    /// Means between `self` and `later` (times in ms), with their counts
    /// and, for times, `p99_at_most_ms` (the bound of the bucket that holds
    /// the 99th percentile).
    pub fn until(&self, later: &Stages) -> Value {
        let mut m = serde_json::Map::new();
        let empty = Histo::default();
        for (label, metric) in STAGES {
            let after = later.0.get(*metric).unwrap_or(&empty);
            let before = self.0.get(*metric).unwrap_or(&empty);
            let count = after.count - before.count;
            if count <= 0.0 {
                continue;
            }
            let scale = if label.ends_with("_ms") { 1000.0 } else { 1.0 };
            let mean = (after.sum - before.sum) / count * scale;
            let mut stage = json!({ "mean": (mean * 1000.0).round() / 1000.0, "count": count });
            // The upper bound of the bucket that holds the 99th percentile.
            let p99 = after.buckets.iter().find_map(|(bound, n)| {
                let below = n - before.buckets.get(bound).copied().unwrap_or(0.0);
                (below >= 0.99 * count && *bound != u64::MAX).then_some(*bound as f64 / 1e6)
            });
            if let Some(p99) = p99 {
                stage["p99_at_most_ms"] = json!(p99);
            }
            m.insert((*label).to_string(), stage);
        }
        Value::Object(m)
    }
}

/// Every process's pid, command name and CPU seconds so far (user + system,
/// with the children it waited for), from `/proc/<pid>/stat`; empty where
/// `/proc` cannot be read.
pub fn process_cpu() -> Vec<(u32, String, f64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((comm, seconds)) = stat_cpu(&stat, true) {
            out.push((pid, comm, seconds));
        }
    }
    out
}
