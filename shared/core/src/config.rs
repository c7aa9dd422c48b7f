//! `stevedore.toml`: server settings, worker settings, object types and the
//! operations workers execute.
//!
//! Precedence (resolved by the binary): command-line flags, then environment
//! variables, then this file, then the defaults documented on each field.

use crate::object::{ObjectType, ObjectTypes};
use crate::{Error, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// The whole configuration file. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address servers listen on (`STEVEDORE_LISTEN`; default `127.0.0.1:8080`).
    pub listen: Option<String>,
    /// `postgres://…` or `sqlite://…` (`STEVEDORE_DATABASE_URL`).
    pub database_url: Option<String>,
    /// `amqp://…` (`STEVEDORE_AMQP_URL`).
    pub amqp_url: Option<String>,
    /// Prefix of queue and exchange names (`STEVEDORE_BROKER_PREFIX`; default `stevedore`).
    pub broker_prefix: Option<String>,
    /// A MaxMind GeoIP2/GeoLite2 City or Country database, to fill actions'
    /// `location` (`STEVEDORE_GEOIP_DATABASE`; default: none, location "").
    pub geoip_database: Option<std::path::PathBuf>,
    /// Deprecated: trust every address as a proxy, so the client is the
    /// leftmost `X-Forwarded-For` hop, which clients can forge
    /// (`STEVEDORE_TRUST_FORWARDED_FOR`; default false). Use `trusted_proxies`.
    #[serde(default)]
    pub trust_forwarded_for: bool,
    /// Networks of the proxies in front of the API (`["10.0.0.0/8",
    /// "127.0.0.1/32"]`): the client is the rightmost `X-Forwarded-For` hop
    /// that is not one of them (`STEVEDORE_TRUSTED_PROXIES`, comma-separated;
    /// default none: the client is the TCP peer).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Origins besides the API's own whose browsers may change things and
    /// open websockets (`["https://ops.example.com"]`;
    /// `STEVEDORE_ALLOWED_ORIGINS`, comma-separated; default none).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Limits on failed authentication.
    #[serde(default)]
    pub auth: AuthSettings,
    /// Worker settings.
    #[serde(default)]
    pub worker: WorkerSettings,
    /// How long history is kept.
    #[serde(default)]
    pub retention: RetentionSettings,
    /// The outbox relay.
    #[serde(default)]
    pub relay: RelaySettings,
    /// RabbitMQ client settings.
    #[serde(default)]
    pub broker: BrokerSettings,
    /// PostgreSQL client settings.
    #[serde(default)]
    pub database: DatabaseSettings,
    /// Webhook deliveries (run by workers).
    #[serde(default)]
    pub webhooks: WebhookSettings,
    /// Limits of the HTTP listeners (connections, requests, pages, streams).
    #[serde(default)]
    pub http: HttpSettings,
    /// Extra object types beyond the five built-ins.
    #[serde(default, rename = "object_type")]
    pub object_types: Vec<ObjectType>,
    /// Operations: (object type, verb) → handler.
    #[serde(default, rename = "operation")]
    pub operations: Vec<Operation>,
}

/// Worker tuning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Actions one worker process runs at once.
    pub concurrency: usize,
    /// How long a claim lasts without a heartbeat. Long enough to ride out a
    /// GC-free but busy process and a slow database; short enough that a killed
    /// worker's actions resume quickly.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often a running action's lease is renewed (well under `lease`).
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Claims after which an action whose worker keeps dying is Failed.
    pub max_claims: i32,
    /// Grace period between SIGTERM and SIGKILL when an `exec` handler is cancelled.
    #[serde(with = "humantime_serde")]
    pub kill_grace: Duration,
    /// After SIGTERM, how long running actions may take to finish before
    /// they are stopped and handed back to other workers. With `kill_grace`
    /// and [`HAND_BACK_WINDOW`] it must fit in `stop_timeout`.
    #[serde(with = "humantime_serde")]
    pub shutdown_deadline: Duration,
    /// The time the platform gives a worker between SIGTERM and SIGKILL
    /// (Kubernetes `terminationGracePeriodSeconds`, systemd `TimeoutStopSec`,
    /// compose `stop_grace_period`): checked at start-up against
    /// `shutdown_deadline + kill_grace +` [`HAND_BACK_WINDOW`].
    #[serde(with = "humantime_serde")]
    pub stop_timeout: Duration,
    /// While the database cannot be reached, how long a worker holds a job
    /// message it could not claim before it hands it back to the queue.
    /// Each hand-back counts towards the queue's delivery limit; holding
    /// does not. Keep it under RabbitMQ's `consumer_timeout` (30 min by
    /// default), which closes the channel of a consumer that holds a
    /// message longer.
    #[serde(with = "humantime_serde")]
    pub outage_hold: Duration,
    /// After an `exec` command's main process exited, how long its output
    /// is still collected (a process it started outside its process group
    /// may hold the pipes open for ever).
    #[serde(with = "humantime_serde")]
    pub output_drain: Duration,
    /// Log bytes stored per action (stdout and stderr lines); output past it
    /// is dropped and counted in a final system line. System lines are
    /// always stored.
    pub max_log_bytes: u64,
    /// How often a worker writes its running actions' progress reports:
    /// at most one statement per interval for all that changed, whatever
    /// the handlers report in between (only the latest report counts).
    #[serde(with = "humantime_serde")]
    pub progress_interval: Duration,
    /// How often a worker renews its entry in the workers registry
    /// (`GET /api/v1/worker/`), with the actions it runs.
    #[serde(with = "humantime_serde")]
    pub registry_heartbeat: Duration,
    /// How long a worker stays in the registry after its last heartbeat: a
    /// worker that died leaves the list within this time.
    #[serde(with = "humantime_serde")]
    pub registry_lease: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            concurrency: 64,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            max_claims: 5,
            kill_grace: Duration::from_secs(10),
            shutdown_deadline: Duration::from_secs(20),
            stop_timeout: Duration::from_secs(40),
            outage_hold: Duration::from_secs(300),
            output_drain: Duration::from_secs(2),
            max_log_bytes: 16 * 1024 * 1024,
            progress_interval: Duration::from_secs(1),
            registry_heartbeat: Duration::from_secs(5),
            registry_lease: Duration::from_secs(15),
        }
    }
}

/// The shortest `[worker] progress_interval`: progress writes are meant to
/// be few.
pub const MIN_PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// After the shutdown deadline and the kill grace, the time a worker keeps
/// for handing its stopped actions back and exiting.
pub const HAND_BACK_WINDOW: Duration = Duration::from_secs(5);

/// Margin of the heartbeat's self-fencing: a handler whose lease could not
/// be renewed is stopped this long, plus the kill grace, before the lease
/// can expire.
pub const FENCE_MARGIN: Duration = Duration::from_millis(500);

impl WorkerSettings {
    /// Checks the timings against each other, so a misconfiguration is a
    /// clear error at start-up rather than actions run twice or killed
    /// mid-hand-back.
    pub fn validate(&self) -> Result<()> {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        let fail = |msg: String| Err(Error::Config(format!("[worker] {msg}")));
        if self.concurrency == 0 {
            return fail("concurrency must be at least 1".into());
        }
        if self.max_claims < 1 {
            return fail("max_claims must be at least 1".into());
        }
        if self.heartbeat.is_zero() || self.heartbeat * 2 > self.lease {
            return fail(format!(
                "heartbeat ({}) must be at most half the lease ({}), so a lease survives a missed renewal",
                show(self.heartbeat),
                show(self.lease)
            ));
        }
        if self.heartbeat + self.kill_grace + FENCE_MARGIN > self.lease {
            return fail(format!(
                "lease ({}) must exceed heartbeat + kill_grace + {} ({}): a worker that cannot renew its lease must stop its command before the lease can expire",
                show(self.lease),
                show(FENCE_MARGIN),
                show(self.heartbeat + self.kill_grace + FENCE_MARGIN)
            ));
        }
        let shutdown = self.shutdown_deadline + self.kill_grace + HAND_BACK_WINDOW;
        if shutdown > self.stop_timeout {
            return fail(format!(
                "shutdown_deadline + kill_grace + {} ({}) must fit in stop_timeout ({}), the platform's grace period before SIGKILL",
                show(HAND_BACK_WINDOW),
                show(shutdown),
                show(self.stop_timeout)
            ));
        }
        if self.outage_hold.is_zero() || self.outage_hold >= Duration::from_secs(30 * 60) {
            return fail(format!(
                "outage_hold ({}) must be between 0 and RabbitMQ's default consumer_timeout (30m)",
                show(self.outage_hold)
            ));
        }
        if self.max_log_bytes == 0 {
            return fail("max_log_bytes must be positive".into());
        }
        if self.progress_interval < MIN_PROGRESS_INTERVAL || self.progress_interval > self.lease {
            return fail(format!(
                "progress_interval ({}) must be between {} and the lease ({})",
                show(self.progress_interval),
                show(MIN_PROGRESS_INTERVAL),
                show(self.lease)
            ));
        }
        if self.registry_heartbeat.is_zero() || self.registry_heartbeat * 2 > self.registry_lease {
            return fail(format!(
                "registry_heartbeat ({}) must be at most half the registry_lease ({}), so a live worker never drops off the list",
                show(self.registry_heartbeat),
                show(self.registry_lease)
            ));
        }
        Ok(())
    }
}

/// How long a query waits for a free database connection before failing,
/// unless `[database] acquire_timeout` says otherwise.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// PostgreSQL client settings (`[database]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// How long a query waits for a connection before it fails: while the
    /// database is unreachable, each attempt of a request or a claim takes
    /// this long to fail.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// The least time between the starts of two batch transactions of one
    /// process (submissions, final writes) while requests collide: fewer,
    /// larger batches under everyday load, for a little latency
    /// (`stevedore_core::group_commit`). Zero turns pacing off.
    #[serde(with = "humantime_serde")]
    pub batch_interval: Duration,
}

/// How long batch transactions are paced apart by default, unless
/// `[database] batch_interval` says otherwise (docs/benchmarks-history.md,
/// round 11).
pub const DEFAULT_BATCH_INTERVAL: Duration = Duration::from_millis(20);

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            batch_interval: DEFAULT_BATCH_INTERVAL,
        }
    }
}

/// RabbitMQ client settings (`[broker]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSettings {
    /// How long one publish may take, with its confirms, before it fails
    /// (a stalled or blocked broker): the request is answered from what was
    /// committed and the outbox relay publishes it later.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// How many quorum queues jobs are spread over (1 to 64; default 1).
    /// Publishers rotate job messages over them and every worker consumes
    /// from all of them, which lifts the ceiling of one queue on a cluster.
    /// Every process must use the same count; see docs/SCALING.md.
    pub job_queues: u16,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            publish_timeout: Duration::from_secs(5),
            job_queues: 1,
        }
    }
}

/// Limits on failed authentication (`[auth]`). Each failure takes one unit
/// from the client address's allowance and one from the user name's; an
/// allowance refills evenly over `failure_window`. While either is empty,
/// every attempt from that address or for that user is answered 429
/// without checking its credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Failed authentications one client address may make per window (0: no limit).
    pub failures_per_address: u32,
    /// Failed authentications against one user name per window (0: no limit).
    pub failures_per_user: u32,
    /// The time over which an allowance refills.
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
    /// Repeated failures for one user are written to the system log as one
    /// entry per this window, with their count.
    #[serde(with = "humantime_serde")]
    pub failure_log_window: Duration,
    /// How long a dashboard session (`POST /api/v1/login`) lasts; logging
    /// out or revoking its key ends it sooner.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// How long an API or stream process trusts credentials and sessions it
    /// verified without asking the store again ("0s": every request asks).
    /// A revocation empties the cache at once where it is announced; this
    /// bounds how long one whose announcement was lost goes unnoticed.
    #[serde(with = "humantime_serde")]
    pub credential_cache_ttl: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            failures_per_address: 30,
            failures_per_user: 10,
            failure_window: Duration::from_secs(60),
            failure_log_window: Duration::from_secs(60),
            session_ttl: Duration::from_secs(12 * 3600),
            credential_cache_ttl: Duration::from_secs(5),
        }
    }
}

/// Webhook deliveries (`[webhooks]`): where they may connect, how long an
/// attempt may take, how often and how long they are retried, and how many
/// run at once. docs/CONFIG.md gives the reasons for the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Let deliveries connect to loopback, private, link-local and other
    /// reserved networks (the guard against server-side request forgery is
    /// off). Default false.
    pub allow_private_networks: bool,
    /// Networks deliveries may connect to even though they are private
    /// (`["10.1.0.0/16"]`): narrower than `allow_private_networks`.
    pub allowed_networks: Vec<String>,
    /// How long one attempt may take, connection included; a receiver that
    /// has not answered by then has failed the attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts of one delivery before it is marked failed.
    pub max_attempts: i32,
    /// The delay after the first failed attempt; it doubles after each.
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    /// The longest delay between two attempts.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Deliveries one worker process sends at once.
    pub concurrency: usize,
    /// Of those, at most this many to one webhook, so a slow receiver cannot
    /// hold every slot.
    pub per_webhook: usize,
    /// How often the relay looks for new events and the sender for due
    /// deliveries when there was nothing to do.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            allow_private_networks: false,
            allowed_networks: vec![],
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            backoff_min: Duration::from_secs(5),
            backoff_max: Duration::from_secs(3600),
            concurrency: 16,
            per_webhook: 4,
            poll_interval: Duration::from_millis(500),
        }
    }
}

impl WebhookSettings {
    /// Checks the settings, so a mistake is a clear error at start-up.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: &str| Err(Error::Config(format!("[webhooks] {msg}")));
        if self.timeout.is_zero() {
            return fail("timeout must be positive");
        }
        if self.max_attempts < 1 {
            return fail("max_attempts must be at least 1");
        }
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            return fail("backoff_min must be positive and at most backoff_max");
        }
        if self.concurrency == 0 || self.per_webhook == 0 {
            return fail("concurrency and per_webhook must be at least 1");
        }
        if self.poll_interval.is_zero() {
            return fail("poll_interval must be positive");
        }
        crate::webhook::network::NetworkPolicy::new(self.allow_private_networks, &self.allowed_networks)
            .map_err(Error::Config)?;
        Ok(())
    }

    /// The network guard these settings describe.
    pub fn network_policy(&self) -> crate::webhook::network::NetworkPolicy {
        crate::webhook::network::NetworkPolicy::new(self.allow_private_networks, &self.allowed_networks)
            .unwrap_or_default()
    }

    /// How long a claimed delivery stays claimed: one attempt's timeout
    /// and a margin; a worker that dies mid-attempt has its deliveries
    /// retried after that.
    pub fn claim_lease(&self) -> Duration {
        self.timeout + Duration::from_secs(5)
    }
}

/// The outbox relay's sweep of actions nobody claimed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySettings {
    /// An In progress action that no worker claimed for this long is
    /// published again (a job the broker confirmed and then lost). It bounds
    /// how long such a loss can delay an action.
    #[serde(with = "humantime_serde")]
    pub redispatch_after: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            redispatch_after: crate::dispatch::REDISPATCH_AFTER,
        }
    }
}

/// What one HTTP listener allows a client (`[http]`): the connection
/// timeouts and caps of `stevedore dev`, `api` and `stream`, and the memory
/// one request or websocket may hold. docs/CONFIG.md gives the reasons for
/// the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// A request's headers must be complete this long after the server
    /// starts waiting for them (after the connection is accepted, or the
    /// previous response on it ended): slow or half-open clients are closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A request (streams and long-polls excepted) must be answered within
    /// this long, its body included; otherwise 503.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Streams (logs and events; websockets and event streams together) one
    /// user may hold open on one process.
    pub max_websockets_per_user: usize,
    /// Long-polls (`/api/v1/event/wait/…`) one user may hold on one process.
    pub max_waits_per_user: usize,
    /// Bytes of stored rows one page of a list may hold; a page that would
    /// exceed it ends early (with at least one row) and says so in its `meta`.
    pub page_bytes: usize,
    /// Most objects an `include_related` filter may expand to.
    pub max_related: i64,
    /// Largest `tail` of a logs stream.
    pub max_log_tail: i64,
    /// Bytes one stream client (websocket or event stream) may have queued
    /// before it counts as too slow and is disconnected.
    pub client_queue_bytes: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_websockets_per_user: 32,
            max_waits_per_user: 32,
            page_bytes: 4 * 1024 * 1024,
            max_related: 1000,
            max_log_tail: 10_000,
            client_queue_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Retention of history (finished actions, their logs, events, system log).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Keep finished actions, events and system log entries this long.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Keep at most this many system log entries (the newest) per tenant:
    /// per namespace, and as many operators-only entries.
    pub max_system_log: i64,
    /// How often the pruner runs (0 turns it off).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_system_log: 1_000_000,
            interval: Duration::from_secs(3600),
        }
    }
}

/// What runs an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerSpec {
    /// A command: argv, the action JSON on stdin.
    Exec(Vec<String>),
    /// A built-in handler by name (`noop`, `sleep`, …).
    Builtin(String),
}

/// One `[[operation]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// Object type name (`service`, …).
    pub object: String,
    /// Verb in `POST …/<uuid>/<verb>/`.
    pub verb: String,
    /// Action name; default: "<Type label> <Verb>", e.g. "Service Start".
    pub action: Option<String>,
    /// Command to run (mutually exclusive with `handler`).
    pub exec: Option<Vec<String>>,
    /// Built-in handler name (mutually exclusive with `exec`).
    pub handler: Option<String>,
    /// Time limit for one attempt (default 10 minutes).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Automatic retries for temporary failures (default 0).
    #[serde(default)]
    pub retries: u32,
    /// Extra environment for `exec` handlers.
    #[serde(default)]
    pub env: HashMap<String, String>,
    /// `exec` only: leave processes the command started in its process
    /// group running after it exits (daemons it launches on purpose).
    /// Default false: they get SIGTERM, then SIGKILL after `kill_grace`.
    #[serde(default)]
    pub detach: bool,
}

/// Default time limit of one attempt of an operation.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(600);

impl Operation {
    /// The handler this operation runs.
    pub fn handler_spec(&self) -> HandlerSpec {
        match (&self.exec, &self.handler) {
            (Some(argv), _) => HandlerSpec::Exec(argv.clone()),
            (None, Some(name)) => HandlerSpec::Builtin(name.clone()),
            (None, None) => HandlerSpec::Builtin("noop".into()),
        }
    }

    /// The time limit of one attempt.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_OPERATION_TIMEOUT)
    }
}

/// The resolved operations and object types, validated.
#[derive(Debug, Clone, Default)]
pub struct Operations {
    types: ObjectTypes,
    ops: Vec<Operation>,
}

/// Built-in handler names a config may refer to.
pub const BUILTIN_HANDLERS: &[&str] = &["noop", "sleep", "fail"];

impl Operations {
    /// Validates and indexes `ops` against the built-in types plus `extra_types`.
    pub fn new(extra_types: &[ObjectType], ops: Vec<Operation>) -> Result<Self> {
        let types = ObjectTypes::with_extra(extra_types);
        let mut resolved: Vec<Operation> = Vec::with_capacity(ops.len());
        for mut op in ops {
            let ty = types.by_name(&op.object).ok_or_else(|| {
                Error::Config(format!(
                    "operation {}/{}: unknown object type {:?}",
                    op.object, op.verb, op.object
                ))
            })?;
            if op.verb.is_empty()
                || !op
                    .verb
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(Error::Config(format!(
                    "operation {}: invalid verb {:?}",
                    op.object, op.verb
                )));
            }
            if op.exec.is_some() && op.handler.is_some() {
                return Err(Error::Config(format!(
                    "operation {}/{}: set either exec or handler, not both",
                    op.object, op.verb
                )));
            }
            if let Some(argv) = &op.exec {
                if argv.is_empty() {
                    return Err(Error::Config(format!(
                        "operation {}/{}: exec is empty",
                        op.object, op.verb
                    )));
                }
            }
            if let Some(h) = &op.handler {
                if !BUILTIN_HANDLERS.contains(&h.as_str()) {
                    return Err(Error::Config(format!(
                        "operation {}/{}: unknown handler {h:?} (built-ins: {})",
                        op.object,
                        op.verb,
                        BUILTIN_HANDLERS.join(", ")
                    )));
                }
            }
            if resolved
                .iter()
                .any(|o| o.object == op.object && o.verb == op.verb)
            {
                return Err(Error::Config(format!(
                    "operation {}/{} is declared twice",
                    op.object, op.verb
                )));
            }
            if op.action.is_none() {
                op.action = Some(format!("{} {}", ty.label, title_case(&op.verb)));
            }
            resolved.push(op);
        }
        Ok(Operations { types, ops: resolved })
    }

    /// The object types.
    pub fn types(&self) -> &ObjectTypes {
        &self.types
    }

    /// The operation for (type, verb).
    pub fn get(&self, object_type: &str, verb: &str) -> Option<&Operation> {
        self.ops
            .iter()
            .find(|o| o.object == object_type && o.verb == verb)
    }

    /// Every operation.
    pub fn all(&self) -> &[Operation] {
        &self.ops
    }

    /// The verbs configured for a type, for error messages.
    pub fn verbs(&self, object_type: &str) -> Vec<&str> {
        self.ops
            .iter()
            .filter(|o| o.object == object_type)
            .map(|o| o.verb.as_str())
            .collect()
    }
}

/// `redeploy` → `Redeploy`, `scale_up` → `Scale Up`.
pub fn title_case(s: &str) -> String {
    s.split(['_', '-'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| match e {
            // Already a configuration error: name the file, not the kind twice.
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => Error::Config(format!("{}: {other}", path.display())),
        })
    }

    /// Parses config text.
    pub fn parse(text: &str) -> Result<Self> {
        let cfg: FileConfig = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        cfg.worker.validate()?;
        cfg.webhooks.validate()?;
        if cfg.database.acquire_timeout.is_zero() {
            return Err(Error::Config(
                "[database] acquire_timeout must be positive".into(),
            ));
        }
        if !(1..=crate::broker::MAX_JOB_QUEUES).contains(&cfg.broker.job_queues) {
            return Err(Error::Config(format!(
                "[broker] job_queues must be between 1 and {}",
                crate::broker::MAX_JOB_QUEUES
            )));
        }
        if cfg.broker.publish_timeout.is_zero() {
            return Err(Error::Config("[broker] publish_timeout must be positive".into()));
        }
        // chrono holds about 292,000 years; ten years is plenty for a session.
        if cfg.auth.session_ttl.is_zero() || cfg.auth.session_ttl > Duration::from_secs(10 * 365 * 86_400) {
            return Err(Error::Config(
                "[auth] session_ttl must be positive and at most 10 years".into(),
            ));
        }
        Ok(cfg)
    }

    /// The validated operations of this file.
    pub fn operations(&self) -> Result<Operations> {
        Operations::new(&self.object_types, self.operations.clone())
    }
}

/// The example configuration shipped with `stevedore dev`: demo operations for
/// the five object types.
pub const EXAMPLE_CONFIG: &str = include_str!("../../../stevedore.example.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_is_valid() {
        let cfg = FileConfig::parse(EXAMPLE_CONFIG).unwrap();
        let ops = cfg.operations().unwrap();
        for ty in ["stack", "service", "container", "nodecluster", "node"] {
            assert!(!ops.verbs(ty).is_empty(), "no demo operation for {ty}");
        }
        assert_eq!(
            ops.get("service", "start").unwrap().action.as_deref(),
            Some("Service Start")
        );
    }

    #[test]
    fn the_batch_interval_is_read_defaults_and_refuses_what_is_no_duration() {
        assert_eq!(
            FileConfig::parse("").unwrap().database.batch_interval,
            DEFAULT_BATCH_INTERVAL
        );
        let cfg = FileConfig::parse("[database]\nbatch_interval = \"5ms\"").unwrap();
        assert_eq!(cfg.database.batch_interval, Duration::from_millis(5));
        let off = FileConfig::parse("[database]\nbatch_interval = \"0s\"").unwrap();
        assert!(off.database.batch_interval.is_zero());
        let err = FileConfig::parse("[database]\nbatch_interval = \"soon\"").unwrap_err();
        assert!(err.to_string().contains("expected a duration"), "{err}");
    }

    #[test]
    fn job_queues_default_to_one_and_refuse_what_is_out_of_range() {
        assert_eq!(FileConfig::parse("").unwrap().broker.job_queues, 1);
        assert_eq!(
            FileConfig::parse("[broker]\njob_queues = 3")
                .unwrap()
                .broker
                .job_queues,
            3
        );
        for bad in ["0", "65"] {
            let err = FileConfig::parse(&format!("[broker]\njob_queues = {bad}")).unwrap_err();
            assert!(
                err.to_string().contains("job_queues must be between 1 and 64"),
                "{err}"
            );
        }
        let err = FileConfig::parse("[broker]\njob_queues = -1").unwrap_err();
        assert!(err.to_string().contains("job_queues"), "{err}");
    }

    #[test]
    fn bad_operations_are_refused_with_a_reason() {
        for (text, want) in [
            (
                "[[operation]]\nobject='planet'\nverb='spin'",
                "unknown object type",
            ),
            (
                "[[operation]]\nobject='service'\nverb='x'\nexec=[]",
                "exec is empty",
            ),
            (
                "[[operation]]\nobject='service'\nverb='x'\nhandler='nope'",
                "unknown handler",
            ),
            ("[[operation]]\nobject='service'\nverb='a b'", "invalid verb"),
            (
                "[[operation]]\nobject='service'\nverb='x'\n[[operation]]\nobject='service'\nverb='x'",
                "declared twice",
            ),
        ] {
            let err = FileConfig::parse(text)
                .unwrap()
                .operations()
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err}");
        }
        assert!(FileConfig::parse("bogus_key = 1").is_err());
    }

    #[test]
    fn worker_timings_are_checked_against_each_other() {
        assert!(WorkerSettings::default().validate().is_ok());
        for (text, want) in [
            ("[worker]\nlease='10s'\nheartbeat='6s'", "at most half the lease"),
            (
                "[worker]\nlease='10s'\nheartbeat='2s'\nkill_grace='8s'",
                "must exceed heartbeat + kill_grace",
            ),
            ("[worker]\nshutdown_deadline='30s'", "must fit in stop_timeout"),
            ("[worker]\nstop_timeout='30s'", "must fit in stop_timeout"),
            ("[worker]\nconcurrency=0", "at least 1"),
            ("[worker]\noutage_hold='1h'", "consumer_timeout"),
            ("[worker]\nprogress_interval='10ms'", "progress_interval"),
            ("[worker]\nprogress_interval='1m'", "progress_interval"),
            (
                "[worker]\nregistry_heartbeat='10s'\nregistry_lease='15s'",
                "at most half the registry_lease",
            ),
            ("[worker]\nregistry_heartbeat='0s'", "registry_heartbeat"),
        ] {
            let err = FileConfig::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        assert!(FileConfig::parse("[worker]\nshutdown_deadline='50s'\nstop_timeout='65s'").is_ok());
        let cfg = FileConfig::parse("[worker]\nprogress_interval='250ms'").unwrap();
        assert_eq!(cfg.worker.progress_interval, Duration::from_millis(250));
        assert_eq!(
            WorkerSettings::default().progress_interval,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn edge_and_auth_settings_parse_with_defaults() {
        let cfg = FileConfig::parse(
            "trusted_proxies = [\"10.0.0.0/8\"]\nallowed_origins = [\"https://ops.example.com\"]\n\
             [auth]\nfailures_per_user = 3\nfailure_window = \"5m\"\nsession_ttl = \"30m\"\n",
        )
        .unwrap();
        assert_eq!(cfg.trusted_proxies, ["10.0.0.0/8"]);
        assert_eq!(cfg.allowed_origins, ["https://ops.example.com"]);
        assert_eq!(cfg.auth.failures_per_user, 3);
        assert_eq!(cfg.auth.failure_window, Duration::from_secs(300));
        assert_eq!(
            cfg.auth.failures_per_address,
            AuthSettings::default().failures_per_address
        );
        assert_eq!(cfg.auth.session_ttl, Duration::from_secs(1800));
        assert_eq!(cfg.auth.credential_cache_ttl, Duration::from_secs(5));
        assert_eq!(
            AuthSettings::default().session_ttl,
            Duration::from_secs(12 * 3600)
        );
        assert!(FileConfig::parse("[auth]\nfailures = 3").is_err());
        let err = FileConfig::parse("[auth]\nsession_ttl = \"0s\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("session_ttl"), "{err}");
    }

    #[test]
    fn verbs_become_title_case_action_names() {
        assert_eq!(title_case("redeploy"), "Redeploy");
        assert_eq!(title_case("scale_up"), "Scale Up");
    }

    #[test]
    fn webhook_settings_default_safe_and_refuse_nonsense() {
        let cfg = FileConfig::parse("").unwrap();
        assert_eq!(cfg.webhooks, WebhookSettings::default());
        assert!(!cfg.webhooks.allow_private_networks);
        assert!(cfg
            .webhooks
            .network_policy()
            .check("127.0.0.1".parse().unwrap())
            .is_err());
        let cfg = FileConfig::parse(
            "[webhooks]\nallowed_networks = [\"10.1.0.0/16\"]\ntimeout = \"3s\"\nmax_attempts = 2",
        )
        .unwrap();
        assert!(cfg
            .webhooks
            .network_policy()
            .check("10.1.2.3".parse().unwrap())
            .is_ok());
        assert_eq!(cfg.webhooks.claim_lease(), Duration::from_secs(8));
        for (bad, needle) in [
            ("max_attempts = 0", "max_attempts"),
            ("timeout = \"0s\"", "timeout"),
            ("backoff_min = \"10s\"\nbackoff_max = \"1s\"", "backoff_min"),
            ("per_webhook = 0", "per_webhook"),
            ("allowed_networks = [\"nope\"]", "nope"),
            ("bogus = 1", "bogus"),
        ] {
            let err = FileConfig::parse(&format!("[webhooks]\n{bad}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
