//! The subcommands: each wires the crates together for one role.

use crate::settings::{self, CommonArgs, HttpArgs, DEFAULT_DATA_DIR, DEFAULT_LISTEN};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use stevedore_api::client_addr::TrustedProxies;
use stevedore_api::geoip::GeoIp;
use stevedore_api::origin::OriginPolicy;
use stevedore_api::{ApiParts, ApiState};
use stevedore_broker::amqp::AmqpBroker;
use stevedore_broker::memory::MemoryBroker;
use stevedore_core::auth::{generate_api_key, hash_api_key, valid_name};
use stevedore_core::broker::{BrokerNames, DynBroker};
use stevedore_core::config::{FileConfig, Operations};
use stevedore_core::dispatch::{Dispatcher, OutboxRelay};
use stevedore_core::retention::run_pruner;
use stevedore_core::shutdown::Shutdown;
use stevedore_core::store::{redact_url, DynStore};
use stevedore_core::syslog::{LogLevel, NewSystemLog};
use stevedore_worker::Worker;

/// `stevedore dev` options.
#[derive(Debug, Args)]
pub struct DevArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "STEVEDORE_LISTEN")]
    listen: Option<String>,
    /// Where the SQLite database lives.
    #[arg(long, env = "STEVEDORE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Name of the bootstrap user.
    #[arg(long, default_value = "admin")]
    admin_user: String,
    /// Networks of the proxies in front of the API, comma-separated
    /// (10.0.0.0/8,127.0.0.1/32): client addresses come from their X-Forwarded-For.
    #[arg(long, env = "STEVEDORE_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<String>,
    /// Origins besides the API's own that browsers may act from, comma-separated
    /// (https://ops.example.com).
    #[arg(long, env = "STEVEDORE_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// MaxMind GeoIP2/GeoLite2 database that fills actions' `location`.
    #[arg(long, env = "STEVEDORE_GEOIP_DATABASE")]
    geoip_database: Option<PathBuf>,
    #[command(flatten)]
    http: HttpArgs,
}

/// Where the production roles find RabbitMQ, and its topology.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// RabbitMQ URL (several nodes of a cluster: comma-separated).
    #[arg(long, env = "STEVEDORE_AMQP_URL")]
    amqp_url: Option<String>,
    /// Prefix of queue and exchange names.
    #[arg(long, env = "STEVEDORE_BROKER_PREFIX")]
    broker_prefix: Option<String>,
    /// Quorum queues jobs are spread over (overrides [broker] job_queues;
    /// every process must use the same count).
    #[arg(long, env = "STEVEDORE_BROKER_JOB_QUEUES",
          value_parser = clap::value_parser!(u16).range(1..=i64::from(stevedore_core::broker::MAX_JOB_QUEUES)))]
    job_queues: Option<u16>,
}

/// Options of the long-running production roles.
#[derive(Debug, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "STEVEDORE_LISTEN")]
    listen: Option<String>,
    #[command(flatten)]
    broker: BrokerArgs,
    /// Deprecated (use --trusted-proxies): trust every X-Forwarded-For hop,
    /// so the client is the leftmost, which clients can forge.
    #[arg(long, env = "STEVEDORE_TRUST_FORWARDED_FOR")]
    trust_forwarded_for: bool,
    /// Networks of the proxies in front of the API, comma-separated
    /// (10.0.0.0/8,127.0.0.1/32): client addresses come from their X-Forwarded-For.
    #[arg(long, env = "STEVEDORE_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<String>,
    /// Origins besides the API's own that browsers may act from, comma-separated
    /// (https://ops.example.com).
    #[arg(long, env = "STEVEDORE_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// MaxMind GeoIP2/GeoLite2 database that fills actions' `location`.
    #[arg(long, env = "STEVEDORE_GEOIP_DATABASE")]
    geoip_database: Option<PathBuf>,
    /// `api` only: also serve the stream routes (logs, events; websockets or
    /// Server-Sent Events) on the same listener.
    #[arg(long, env = "STEVEDORE_WITH_STREAM")]
    with_stream: bool,
    #[command(flatten)]
    http: HttpArgs,
}

impl ServerArgs {
    /// Whether `api` serves the stream routes too (`--with-stream`).
    pub fn with_stream(&self) -> bool {
        self.with_stream
    }
}

/// `stevedore worker` options.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(subcommand)]
    client: Option<crate::cli::workers::WorkerCommand>,
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    broker: BrokerArgs,
    /// Actions run at once (overrides [worker] concurrency).
    #[arg(long, env = "STEVEDORE_WORKER_CONCURRENCY")]
    concurrency: Option<usize>,
    /// Serve /healthz, /readyz, /metrics and /openapi.json on this address
    /// (port 0 picks a free port). Unset: the worker serves no HTTP.
    #[arg(long, env = "STEVEDORE_LISTEN")]
    listen: Option<String>,
}

impl WorkerArgs {
    /// The client subcommand given (`worker ls`), if any: without one,
    /// `stevedore worker` runs a worker.
    pub fn take_client_command(&mut self) -> Option<crate::cli::workers::WorkerCommand> {
        self.client.take()
    }
}

/// `stevedore user create` options.
#[derive(Debug, Args)]
pub struct UserCreateArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// User name (also their own namespace).
    name: String,
    /// Further namespaces (organisations) the user belongs to.
    #[arg(long = "namespace")]
    namespaces: Vec<String>,
    /// Make the user an admin (an operator: may list the workers).
    #[arg(long)]
    admin: bool,
    /// Where the dev SQLite database lives (when no database URL is given).
    #[arg(long, env = "STEVEDORE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

/// `stevedore user grant-admin|revoke-admin` options.
#[derive(Debug, Args)]
pub struct UserAdminArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The user.
    name: String,
    /// RabbitMQ URL, to tell running API and stream processes at once
    /// (without it they notice within [auth] credential_cache_ttl, 5 s by default).
    #[arg(long, env = "STEVEDORE_AMQP_URL")]
    amqp_url: Option<String>,
    /// Prefix of queue and exchange names.
    #[arg(long, env = "STEVEDORE_BROKER_PREFIX")]
    broker_prefix: Option<String>,
    /// Where the dev SQLite database lives (when no database URL is given).
    #[arg(long, env = "STEVEDORE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

/// `stevedore apikey create` options.
#[derive(Debug, Args)]
pub struct ApikeyCreateArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The user the key is for.
    name: String,
    /// Where the dev SQLite database lives (when no database URL is given).
    #[arg(long, env = "STEVEDORE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

async fn open_store(url: &str, file: &FileConfig) -> Result<DynStore> {
    let store = stevedore_store::connect_with(url, &file.database)
        .await
        .with_context(|| format!("connecting to {}", redact_url(url)))?;
    Ok(store)
}

async fn open_amqp(args: BrokerArgs, file: &FileConfig) -> Result<DynBroker> {
    let url = args
        .amqp_url
        .or_else(|| file.amqp_url.clone())
        .context("no RabbitMQ URL: set --amqp-url, STEVEDORE_AMQP_URL or amqp_url in the config file")?;
    let prefix = args
        .broker_prefix
        .or_else(|| file.broker_prefix.clone())
        .unwrap_or_else(|| "stevedore".into());
    let names = BrokerNames::new(prefix).with_job_queues(args.job_queues.unwrap_or(file.broker.job_queues));
    let broker = AmqpBroker::connect(&url, names)
        .await
        .with_context(|| format!("connecting to {}", redact_url(&url)))?
        .with_publish_timeout(file.broker.publish_timeout);
    let broker: DynBroker = Arc::new(broker);
    broker
        .declare()
        .await
        .context("declaring the RabbitMQ topology")?;
    Ok(broker)
}

async fn bind(listen: &str) -> Result<(tokio::net::TcpListener, String)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    Ok((listener, format!("http://{addr}")))
}

/// The role's dispatcher, with the file's `[database]` batch settings.
fn dispatcher(store: DynStore, broker: DynBroker, file: &FileConfig) -> Dispatcher {
    Dispatcher::new(store, broker).with_batch_interval(file.database.batch_interval)
}

/// The outbox relay with the config's redispatch bound.
fn relay(dispatcher: &Dispatcher, file: &FileConfig) -> OutboxRelay {
    use stevedore_core::dispatch::{RELAY_INTERVAL, RELAY_MIN_AGE};
    OutboxRelay::new(dispatcher.clone()).with_timings(
        RELAY_INTERVAL,
        RELAY_MIN_AGE,
        file.relay.redispatch_after,
    )
}

/// Opens the GeoIP database the flag or the file names, if any.
fn open_geoip(flag: Option<PathBuf>, file: &FileConfig) -> Result<Option<Arc<GeoIp>>> {
    match flag.or_else(|| file.geoip_database.clone()) {
        Some(path) => Ok(Some(Arc::new(GeoIp::open(&path).map_err(anyhow::Error::msg)?))),
        None => Ok(None),
    }
}

/// The settings that face the network's edge: which proxies are trusted
/// and which origins besides the API's own browsers may act from. Flags and
/// environment win over the file; the deprecated `trust_forwarded_for`
/// means "trust every proxy" and cannot be combined with a list.
fn edge_settings(
    trust_all: bool,
    proxies: Vec<String>,
    origins: Vec<String>,
    file: &FileConfig,
) -> Result<(TrustedProxies, OriginPolicy)> {
    let non_empty = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let (proxies, origins) = (non_empty(proxies), non_empty(origins));
    let proxies = if proxies.is_empty() {
        file.trusted_proxies.clone()
    } else {
        proxies
    };
    let origins = if origins.is_empty() {
        file.allowed_origins.clone()
    } else {
        origins
    };
    let trust_all = trust_all || file.trust_forwarded_for;
    let proxies = match (trust_all, proxies.is_empty()) {
        (true, false) => bail!(
            "trust_forwarded_for (deprecated) and trusted_proxies are both set: keep only trusted_proxies"
        ),
        (true, true) => {
            tracing::warn!(
                "trust_forwarded_for is deprecated: it trusts every address as a proxy, so clients can \
                 forge their address; list your proxies in trusted_proxies instead"
            );
            TrustedProxies::all()
        }
        (false, _) => TrustedProxies::parse(&proxies).map_err(anyhow::Error::msg)?,
    };
    let origins = OriginPolicy::new(&origins).map_err(anyhow::Error::msg)?;
    Ok((proxies, origins))
}

fn print_exports(url: &str, user: &str, key: &str) {
    println!("export STEVEDORE_URL={url}");
    println!("export STEVEDORE_USER={user}");
    println!("export STEVEDORE_APIKEY={key}");
}

/// `stevedore dev`.
pub async fn dev(a: DevArgs) -> Result<()> {
    a.common.init_logging();
    stevedore_api::ops::install_metrics();
    let file = a.common.file()?;
    let (proxies, origins) = edge_settings(false, a.trusted_proxies, a.allowed_origins, &file)?;
    let ops = Arc::new(settings::operations(&file, true)?);
    let db_url = match a.common.database_url(&file) {
        Some(u) => u,
        None => settings::dev_database_url(&a.data_dir)?,
    };
    let store = open_store(&db_url, &file).await?;
    store.migrate().await.context("migrating the database")?;
    let broker: DynBroker = Arc::new(MemoryBroker::new());
    broker.declare().await?;
    let dispatcher = dispatcher(store.clone(), broker, &file);
    let user = &a.admin_user;
    if store.get_user(user).await?.is_none() {
        store.create_user(user, &[]).await?;
    }
    // The bootstrap user is the dev server's operator.
    store.set_admin(user, true).await?;
    let key = generate_api_key();
    store.add_api_key(user, &hash_api_key(&key)).await?;

    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let listen = a
        .listen
        .or(file.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.into());
    let (listener, url) = bind(&listen).await?;
    let worker = Worker::new(dispatcher.clone(), ops.clone(), file.worker.clone());
    let worker = tokio::spawn(worker.run(shutdown.clone()));
    let relay = tokio::spawn(relay(&dispatcher, &file).run(shutdown.clone()));
    let webhooks = stevedore_worker::webhooks::spawn(store.clone(), file.webhooks.clone(), shutdown.clone());
    tokio::spawn(run_pruner(
        store.clone(),
        file.retention.clone(),
        shutdown.clone(),
    ));
    let limits = a.http.resolve(&file)?;
    let state: ApiState = ApiParts {
        proxies: Arc::new(proxies),
        origins: Arc::new(origins),
        geoip: open_geoip(a.geoip_database, &file)?,
        ..ApiParts::with_limits(dispatcher, ops, limits.clone())
    }
    .with_auth_settings(&file.auth)
    .into();
    stevedore_api::revocation::spawn_listener(&state, shutdown.clone());
    let app = with_stream(state, &shutdown);

    println!("Stevedore dev server listening on {url}");
    println!("  store: {} (SQLite), broker: in-process", redact_url(&db_url));
    println!(
        "  {} operations configured; stop with Ctrl-C",
        settings::operations(&file, true)?.all().len()
    );
    println!();
    print_exports(&url, user, &key);
    use std::io::Write;
    let _ = std::io::stdout().flush();

    stevedore_api::serve(listener, app, &limits, shutdown.clone()).await?;
    shutdown.trigger();
    let _ = relay.await;
    let _ = worker.await;
    let _ = webhooks.await;
    Ok(())
}

fn require_db(common: &CommonArgs, file: &FileConfig) -> Result<String> {
    common.database_url(file).context(
        "no database URL: set --database-url, STEVEDORE_DATABASE_URL or database_url in the config file",
    )
}

/// `stevedore api`.
pub async fn api(a: ServerArgs) -> Result<()> {
    a.common.init_logging();
    stevedore_api::ops::install_metrics();
    let file = a.common.file()?;
    let (proxies, origins) =
        edge_settings(a.trust_forwarded_for, a.trusted_proxies, a.allowed_origins, &file)?;
    let ops = Arc::new(settings::operations(&file, false)?);
    let store = open_store(&require_db(&a.common, &file)?, &file).await?;
    let broker = open_amqp(a.broker, &file).await?;
    let dispatcher = dispatcher(store, broker, &file);
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let listen = a
        .listen
        .or(file.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.into());
    let (listener, url) = bind(&listen).await?;
    let relay = tokio::spawn(relay(&dispatcher, &file).run(shutdown.clone()));
    tokio::spawn(run_pruner(
        dispatcher.store().clone(),
        file.retention.clone(),
        shutdown.clone(),
    ));
    let limits = a.http.resolve(&file)?;
    let state: ApiState = ApiParts {
        proxies: Arc::new(proxies),
        origins: Arc::new(origins),
        geoip: open_geoip(a.geoip_database, &file)?,
        ..ApiParts::with_limits(dispatcher, ops, limits.clone())
    }
    .with_auth_settings(&file.auth)
    .into();
    // The hub also wakes the QNAP long-poll waiters, so it runs with or
    // without the websocket routes.
    state
        .hub
        .spawn_subscriber(state.dispatcher.broker().clone(), shutdown.clone());
    stevedore_api::revocation::spawn_listener(&state, shutdown.clone());
    let app = if a.with_stream {
        with_stream(state, &shutdown)
    } else {
        stevedore_api::router(state)
    };
    println!("Stevedore API listening on {url}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(%url, "api started");
    stevedore_api::serve(listener, app, &limits, shutdown.clone()).await?;
    shutdown.trigger();
    let _ = relay.await;
    Ok(())
}

/// `stevedore worker`.
pub async fn worker(a: WorkerArgs) -> Result<()> {
    a.common.init_logging();
    stevedore_api::ops::install_metrics();
    let file = a.common.file()?;
    let ops: Arc<Operations> = Arc::new(settings::operations(&file, false)?);
    if ops.all().is_empty() {
        tracing::warn!("no operations configured: every job will fail; pass --config stevedore.toml");
    }
    let store = open_store(&require_db(&a.common, &file)?, &file).await?;
    let broker = open_amqp(a.broker, &file).await?;
    let mut settings = file.worker.clone();
    if let Some(c) = a.concurrency {
        settings.concurrency = c;
    }
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let dispatcher = dispatcher(store, broker, &file);
    let listener = match a.listen {
        Some(listen) => {
            let (listener, url) = bind(&listen).await?;
            let app = stevedore_api::ops::worker_router(dispatcher.clone(), &ops);
            println!("Stevedore worker ops listening on {url}");
            use std::io::Write;
            let _ = std::io::stdout().flush();
            tracing::info!(%url, "worker ops listener started");
            let limits = file.http.clone();
            let shutdown = shutdown.clone();
            Some(tokio::spawn(async move {
                stevedore_api::serve(listener, app, &limits, shutdown).await
            }))
        }
        None => None,
    };
    let webhooks = stevedore_worker::webhooks::spawn(
        dispatcher.store().clone(),
        file.webhooks.clone(),
        shutdown.clone(),
    );
    Worker::new(dispatcher, ops, settings).run(shutdown.clone()).await;
    shutdown.trigger();
    let _ = webhooks.await;
    if let Some(server) = listener {
        let _ = server.await;
    }
    Ok(())
}

/// `stevedore migrate`.
pub async fn migrate(a: CommonArgs) -> Result<()> {
    a.init_logging();
    let file = a.file()?;
    let url = require_db(&a, &file)?;
    open_store(&url, &file)
        .await?
        .migrate()
        .await
        .context("migrating")?;
    println!("migrations applied to {}", redact_url(&url));
    Ok(())
}

/// The store an administrative command works on: the configured database,
/// else the dev data directory's SQLite file (migrated either way).
pub(crate) async fn admin_store(common: &CommonArgs, data_dir: &std::path::Path) -> Result<DynStore> {
    let file = common.file()?;
    let url = match common.database_url(&file) {
        Some(u) => u,
        None => settings::dev_database_url(data_dir)?,
    };
    let store = open_store(&url, &file).await?;
    store.migrate().await.context("migrating")?;
    Ok(store)
}

/// Writes an administrative command's system log entry (category `admin`,
/// visible in the user's own namespace).
pub(crate) async fn admin_log(store: &DynStore, user: &str, message: String) {
    let entry = NewSystemLog {
        namespace: Some(user.to_string()),
        category: "admin".into(),
        level: LogLevel::Info,
        user: "admin".into(),
        message,
    };
    if let Err(e) = store.append_system_log(&[entry]).await {
        eprintln!("warning: system log entry not written: {e}");
    }
}

/// `stevedore user create`.
pub async fn user_create(a: UserCreateArgs) -> Result<()> {
    for n in std::iter::once(&a.name).chain(a.namespaces.iter()) {
        if !valid_name(n) {
            bail!("invalid name {n:?}: use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit");
        }
    }
    let store = admin_store(&a.common, &a.data_dir).await?;
    let user = store.create_user(&a.name, &a.namespaces).await?;
    if a.admin {
        store.set_admin(&user.name, true).await?;
    }
    let key = generate_api_key();
    let id = store.add_api_key(&user.name, &hash_api_key(&key)).await?;
    eprintln!(
        "created {} {} in namespaces {} with API key {id}",
        if a.admin { "admin" } else { "user" },
        user.name,
        user.namespaces.join(", ")
    );
    let url = std::env::var("STEVEDORE_URL").unwrap_or_else(|_| format!("http://{DEFAULT_LISTEN}"));
    print_exports(&url, &user.name, &key);
    Ok(())
}

/// `stevedore user grant-admin` (`admin`) and `revoke-admin`: the flag is
/// committed with a new credential revision, then announced like a key
/// revocation, so running processes drop the user's cached credentials.
pub async fn user_set_admin(a: UserAdminArgs, admin: bool) -> Result<()> {
    let file = a.common.file()?;
    let store = admin_store(&a.common, &a.data_dir).await?;
    match store.set_admin(&a.name, admin).await {
        Err(stevedore_core::Error::NotFound(_)) => bail!(
            "no user named {:?}; create it with `stevedore user create`",
            a.name
        ),
        other => other?,
    }
    let what = if admin {
        "is now an admin"
    } else {
        "is no longer an admin"
    };
    admin_log(&store, &a.name, format!("{} {what}", a.name)).await;
    eprintln!("{} {what}", a.name);
    let amqp = a.amqp_url.or_else(|| file.amqp_url.clone());
    let prefix = a
        .broker_prefix
        .or_else(|| file.broker_prefix.clone())
        .unwrap_or_else(|| "stevedore".into());
    crate::keys::tell_running_processes(amqp, prefix, &a.name, &a.common, &file).await;
    Ok(())
}

/// `stevedore apikey create`.
pub async fn apikey_create(a: ApikeyCreateArgs) -> Result<()> {
    let store = admin_store(&a.common, &a.data_dir).await?;
    if store.get_user(&a.name).await?.is_none() {
        bail!(
            "no user named {:?}; create it with `stevedore user create`",
            a.name
        );
    }
    let key = generate_api_key();
    let id = store.add_api_key(&a.name, &hash_api_key(&key)).await?;
    admin_log(&store, &a.name, format!("API key {id} created for {}", a.name)).await;
    eprintln!("created API key {id} for {}", a.name);
    let url = std::env::var("STEVEDORE_URL").unwrap_or_else(|_| format!("http://{DEFAULT_LISTEN}"));
    print_exports(&url, &a.name, &key);
    Ok(())
}

/// The REST API with the websocket stream routes in front of it, on one listener.
fn with_stream(state: ApiState, shutdown: &Shutdown) -> axum::Router {
    stevedore_api::router_with_stream(state, shutdown)
}

/// `stevedore stream`.
pub async fn stream(a: ServerArgs) -> Result<()> {
    a.common.init_logging();
    stevedore_api::ops::install_metrics();
    let file = a.common.file()?;
    let (proxies, origins) =
        edge_settings(a.trust_forwarded_for, a.trusted_proxies, a.allowed_origins, &file)?;
    let ops = Arc::new(settings::operations(&file, false)?);
    let store = open_store(&require_db(&a.common, &file)?, &file).await?;
    let broker = open_amqp(a.broker, &file).await?;
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let listen = a
        .listen
        .or(file.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.into());
    let (listener, url) = bind(&listen).await?;
    let limits = a.http.resolve(&file)?;
    let state: ApiState = ApiParts {
        proxies: Arc::new(proxies),
        origins: Arc::new(origins),
        geoip: None,
        ..ApiParts::with_limits(dispatcher(store, broker, &file), ops, limits.clone())
    }
    .with_auth_settings(&file.auth)
    .into();
    stevedore_api::revocation::spawn_listener(&state, shutdown.clone());
    let app = stevedore_api::stream::standalone_router(state, &shutdown);
    println!("Stevedore stream listening on {url}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(%url, "stream started");
    stevedore_api::serve(listener, app, &limits, shutdown.clone()).await?;
    shutdown.trigger();
    Ok(())
}
