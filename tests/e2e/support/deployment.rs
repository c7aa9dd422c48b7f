//! A deployment of the real `stevedore` binary as a user would run it —
//! either `stevedore dev` (SQLite + in-process broker) or `stevedore migrate`,
//! `api` and `worker` on PostgreSQL + RabbitMQ — and a client talking HTTP to
//! it. Each deployment gets its own database, data directory and broker
//! prefix, and removes them when dropped.

use super::http::ApiClient;
use super::proxy::TcpProxy;
use reqwest::{header::HeaderMap, Method, StatusCode};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use stevedore_core::store::DynStore;
use stevedore_core::testing::{amqp_url, unique_prefix, TestDatabase};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The config every end-to-end deployment runs with: short leases so fault
/// tests finish quickly, and small operations with known output.
pub const TEST_CONFIG: &str = r#"
[worker]
concurrency = 8
lease = "3s"
heartbeat = "1s"
kill_grace = "1s"

[[operation]]
object = "service"
verb = "start"
exec = ["sh", "-c", "echo \"starting $STEVEDORE_OBJECT_UUID\"; echo 'warming up' >&2; echo started"]

[[operation]]
object = "service"
verb = "fail"
exec = ["sh", "-c", "echo failing; exit 3"]

[[operation]]
object = "service"
verb = "noop"
handler = "noop"

[[operation]]
object = "service"
verb = "sleep"
handler = "sleep"

[[operation]]
object = "node"
verb = "upgrade"
handler = "noop"
"#;

/// How long a test waits for an action to reach a state.
pub const SETTLE: Duration = Duration::from_secs(30);

/// Which backends a deployment runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `stevedore dev`: SQLite + in-process broker, one process.
    Embedded,
    /// `stevedore api` + `stevedore worker` on PostgreSQL + RabbitMQ.
    PostgresRabbit,
}

/// A running deployment and a client for it.
pub struct Deployment {
    pub backend: Backend,
    pub url: String,
    pub user: String,
    pub key: String,
    pub db_url: String,
    pub prefix: Option<String>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    /// More environment for every process started from now on
    /// (`SSL_CERT_FILE`, say): the test process's own is shared by every
    /// test and is never changed.
    pub role_env: Vec<(String, String)>,
    children: Vec<Child>,
    http: reqwest::Client,
    _db: Option<TestDatabase>,
}

/// The `stevedore` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_stevedore")
}

/// Checks that `stevedore <args>` (a `--help`) succeeds and prints `says`,
/// and that it does not show the API key it finds in the environment.
pub async fn assert_help(args: &[&str], says: &str) {
    let out = Command::new(bin())
        .args(args)
        .env("STEVEDORE_APIKEY", "secret-value")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{args:?}");
    assert!(text.contains(says), "{args:?}: {text}");
    assert!(
        !text.contains("secret-value"),
        "{args:?} shows the API key: {text}"
    );
}

/// Runs a short-lived `stevedore` command and returns its stdout.
pub async fn run_cli(args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = Command::new(bin())
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("STEVEDORE_DATABASE_URL")
        .output()
        .await
        .expect("run stevedore");
    assert!(
        out.status.success(),
        "stevedore {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads `export NAME=value` lines.
pub fn exports(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Deployment {
    /// Starts a deployment on `backend` with [`TEST_CONFIG`].
    pub async fn start(backend: Backend) -> Deployment {
        Self::start_with(backend, TEST_CONFIG).await
    }

    /// Starts a deployment on `backend` with `config`.
    pub async fn start_with(backend: Backend, config: &str) -> Deployment {
        let mut d = Deployment::new(backend, config);
        match backend {
            Backend::Embedded => d.start_dev().await,
            Backend::PostgresRabbit => d.start_production(None).await,
        }
        d
    }

    /// A deployment with its directory and config file, and no process yet.
    fn new(backend: Backend, config: &str) -> Deployment {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("stevedore.toml");
        std::fs::write(&config_path, config).expect("write config");
        Deployment {
            backend,
            url: String::new(),
            user: String::new(),
            key: String::new(),
            db_url: String::new(),
            prefix: None,
            config_path,
            role_env: vec![],
            children: vec![],
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            _db: None,
            dir,
        }
    }

    /// `stevedore <args>` as a process of this deployment named `name`: its
    /// stderr goes to `<name>.log` ([`Self::logs`]), and it is killed when
    /// dropped.
    fn role_command(&self, name: &str, args: &[&str]) -> Command {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).expect("log file");
        let mut command = Command::new(bin());
        command
            .args(args)
            .env_remove("STEVEDORE_DATABASE_URL")
            .env("RUST_LOG", "info,stevedore=debug")
            .envs(self.role_env.iter().map(|(k, v)| (k, v)))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        command
    }

    /// Spawns a long-running role and waits for the stdout line containing
    /// `ready_marker`; returns the lines read until then.
    pub async fn spawn_role(&mut self, name: &str, args: &[&str], ready_marker: &str) -> Vec<String> {
        let mut child = self
            .role_command(name, args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn stevedore");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = vec![];
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(l)) = lines.next_line().await {
                seen.push(l.clone());
                if l.contains(ready_marker) {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        if !found {
            panic!(
                "{name} did not start; stdout: {seen:?}\nstderr:\n{}",
                self.logs(name)
            );
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.children.push(child);
        seen
    }

    async fn start_dev(&mut self) {
        let data = self.dir.path().join("data");
        let data = data.to_str().unwrap().to_string();
        let cfg = self.config_path.to_str().unwrap().to_string();
        let lines = self
            .spawn_role(
                "dev",
                &[
                    "dev",
                    "--listen",
                    "127.0.0.1:0",
                    "--data-dir",
                    &data,
                    "--config",
                    &cfg,
                ],
                "export STEVEDORE_APIKEY=",
            )
            .await;
        let ex = exports(&lines.join("\n"));
        self.url = ex["STEVEDORE_URL"].clone();
        self.user = ex["STEVEDORE_USER"].clone();
        self.key = ex["STEVEDORE_APIKEY"].clone();
        self.db_url = format!("sqlite://{data}/stevedore.db");
    }

    /// Creates the database and the broker prefix, migrates, creates the
    /// user `alice`, and starts the API and `worker-1`; they reach the
    /// database through `proxy` when given (the test itself still reaches it
    /// directly through `db_url`).
    async fn start_production(&mut self, proxy: Option<&TcpProxy>) {
        let db = TestDatabase::create().await;
        self.db_url = db.url().to_string();
        self._db = Some(db);
        self.prefix = Some(unique_prefix("e2e"));
        let db_url = self.db_url.clone();
        run_cli(&["migrate", "--database-url", &db_url], &[]).await;
        let (user, key) = self.create_user("alice").await;
        self.user = user;
        self.key = key;
        let role_db = proxy.map_or(db_url, |p| p.url_for(&self.db_url));
        self.url = self.start_api_via("api", &role_db, &amqp_url()).await;
        self.start_worker_with_db("worker-1", &role_db).await;
    }

    /// Spawns `stevedore <role…> --listen 127.0.0.1:0` on this deployment's
    /// database, broker prefix and config (PostgreSQL + RabbitMQ only), waits
    /// for its "… `marker` http://ADDR" line, and returns the URL. `role` may
    /// carry flags after the role (`["api", "--with-stream"]`).
    async fn spawn_listening(&mut self, name: &str, role: &[&str], marker: &str) -> String {
        let db_url = self.db_url.clone();
        self.spawn_via(name, role, &db_url, &amqp_url(), marker).await
    }

    /// Starts one more worker process (PostgreSQL + RabbitMQ only). Returns its index.
    pub async fn start_worker(&mut self, name: &str) -> usize {
        let db_url = self.db_url.clone();
        self.start_worker_with_db(name, &db_url).await
    }

    /// Creates a user with the CLI against this deployment's database.
    pub async fn create_user(&self, name: &str) -> (String, String) {
        let out = run_cli(&["user", "create", name, "--database-url", &self.db_url], &[]).await;
        let ex = exports(&out);
        (ex["STEVEDORE_USER"].clone(), ex["STEVEDORE_APIKEY"].clone())
    }

    /// Runs an administrative command (`apikey ls alice`, …) against this
    /// deployment's database, and (PostgreSQL + RabbitMQ) its broker, as an
    /// operator would: returns whether it succeeded, its stdout and stderr.
    pub async fn admin(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env_remove("STEVEDORE_DATABASE_URL")
            .env("STEVEDORE_DATABASE_URL", &self.db_url);
        if let Some(prefix) = &self.prefix {
            cmd.env("STEVEDORE_AMQP_URL", amqp_url())
                .env("STEVEDORE_BROKER_PREFIX", prefix);
        }
        let out = cmd.output().await.expect("run stevedore");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts one more API process on this deployment's database and broker
    /// (PostgreSQL + RabbitMQ only) and returns its URL.
    pub async fn start_api(&mut self, name: &str) -> String {
        self.spawn_listening(name, &["api"], "listening on").await
    }

    /// What a process wrote to stderr (for failure messages).
    pub fn logs(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Sends a request as `(user, key)` with Basic auth, like the SDKs do.
    pub async fn request_as(
        &self,
        auth: Option<(&str, &str)>,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.url, path))
            .header("Content-Type", "application/json")
            .header("User-Agent", "stevedore-tests/1.0");
        if let Some((u, k)) = auth {
            req = req.basic_auth(u, Some(k));
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{status} body is not JSON ({e}): {text:?}"))
        };
        (status, headers, json)
    }

    /// Sends a request as the deployment's user.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> (StatusCode, HeaderMap, Value) {
        self.request_as(Some((&self.user, &self.key)), method, path, body)
            .await
    }

    /// Creates an object and returns its JSON.
    pub async fn create_object(&self, collection: &str, body: &str) -> Value {
        let (status, _, json) = self.request(Method::POST, collection, Some(body)).await;
        assert!(status.is_success(), "create {collection}: {status} {json}");
        json
    }

    /// Creates a service named `web`; its uuid.
    pub async fn new_service(&self) -> String {
        let svc = self
            .create_object("/api/app/v1/service/", r#"{"name": "web"}"#)
            .await;
        svc["uuid"].as_str().unwrap().to_string()
    }

    /// Creates `n` services; their uuids.
    pub async fn new_services(&self, n: usize) -> Vec<String> {
        let mut uuids = Vec::with_capacity(n);
        for _ in 0..n {
            uuids.push(self.new_service().await);
        }
        uuids
    }

    /// Submits `verb` on the service `svc` (its uuid) with `body`, which
    /// must be accepted (202); the action's JSON.
    pub async fn submit_action(&self, svc: &str, verb: &str, body: Option<&str>) -> Value {
        let path = format!("/api/app/v1/service/{svc}/{verb}/");
        let (status, _, action) = self.request(Method::POST, &path, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{path}: {action}");
        action
    }

    /// [`Self::submit_action`], for the action's uuid.
    pub async fn submit(&self, svc: &str, verb: &str, body: Option<&str>) -> String {
        let action = self.submit_action(svc, verb, body).await;
        action["uuid"].as_str().unwrap().to_string()
    }

    /// A client of the API as the deployment's user, to hand to tasks that
    /// outlive a borrow of the deployment.
    pub fn client(&self) -> ApiClient {
        ApiClient {
            url: self.url.clone(),
            user: self.user.clone(),
            key: self.key.clone(),
            http: self.http.clone(),
        }
    }

    /// Polls an action until its state is one of `states`.
    pub async fn wait_for_state(&self, uuid: &str, states: &[&str]) -> Value {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let (status, _, json) = self
                .request(Method::GET, &format!("/api/audit/v1/action/{uuid}/"), None)
                .await;
            assert_eq!(status, StatusCode::OK, "{json}");
            if states.contains(&json["state"].as_str().unwrap_or_default()) {
                return json;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "action {uuid} still {} after {SETTLE:?}\nworker log:\n{}{}",
                    json["state"],
                    self.logs("worker-1"),
                    self.logs("dev")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A store on this deployment's database, to check what was written.
    pub async fn store(&self) -> DynStore {
        stevedore_store::connect(&self.db_url).await.expect("open store")
    }

    /// Sends SIGKILL to a child process.
    pub async fn kill(&mut self, index: usize) {
        let _ = self.children[index].kill().await;
    }
}

/// The lines an action logged, read from `store` (open it once per test
/// with [`Deployment::store`]: each is a connection pool).
pub async fn log_lines(store: &DynStore, uuid: &str) -> Vec<String> {
    store
        .logs(uuid.parse().unwrap(), None)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.log)
        .collect()
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.start_kill();
        }
        if let Some(prefix) = self.prefix.clone() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    use {stevedore_broker::amqp::AmqpBroker, stevedore_core::broker::BrokerNames};
                    if let Ok(b) = AmqpBroker::connect(&amqp_url(), BrokerNames::new(prefix)).await {
                        let _ = b.delete_topology().await;
                    }
                });
            })
            .join();
        }
    }
}

// --- the stream service and the dashboard -------------------------------------

impl Deployment {
    /// Starts a `stevedore stream` process (PostgreSQL + RabbitMQ only) and
    /// returns its base URL.
    pub async fn start_stream(&mut self, name: &str) -> String {
        self.spawn_listening(name, &["stream"], "listening on").await
    }

    /// Where a browser opens the dashboard: the dev server itself, or
    /// (PostgreSQL + RabbitMQ) a new `stevedore api --with-stream` process,
    /// so the page and its websockets share one origin.
    pub async fn dashboard_url(&mut self) -> String {
        match self.backend {
            Backend::Embedded => self.url.clone(),
            Backend::PostgresRabbit => {
                self.spawn_listening("api-ui", &["api", "--with-stream"], "listening on")
                    .await
            }
        }
    }

    /// Where websocket clients connect: the dev server itself, or (PostgreSQL
    /// + RabbitMQ) a new `stevedore stream` process named `stream-1`.
    pub async fn stream_url(&mut self) -> String {
        match self.backend {
            Backend::Embedded => self.url.clone(),
            Backend::PostgresRabbit => self.start_stream("stream-1").await,
        }
    }
}

// --- faults: processes that reach PostgreSQL or RabbitMQ through a proxy -------

impl Deployment {
    /// Starts `stevedore migrate`, `api` and one worker on PostgreSQL +
    /// RabbitMQ, with the api and workers reaching the database through
    /// `proxy` (the test itself still reaches it directly through `db_url`).
    pub async fn start_via_proxy(config: &str, proxy: &TcpProxy) -> Deployment {
        let mut d = Deployment::new(Backend::PostgresRabbit, config);
        d.start_production(Some(proxy)).await;
        d
    }

    /// Spawns `stevedore <role…> --listen 127.0.0.1:0` on this deployment's
    /// broker prefix and config, reaching the database at `db_url` and
    /// RabbitMQ at `amqp` (through a proxy, say); returns the URL its
    /// "… `marker` http://ADDR" line names.
    pub async fn spawn_via(
        &mut self,
        name: &str,
        role: &[&str],
        db_url: &str,
        amqp: &str,
        marker: &str,
    ) -> String {
        let prefix = self.prefix.clone().expect("PostgreSQL + RabbitMQ only");
        let cfg = self.config_path.to_str().unwrap().to_string();
        let mut args = role.to_vec();
        args.extend([
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            db_url,
            "--amqp-url",
            amqp,
            "--broker-prefix",
            &prefix,
            "--config",
            &cfg,
        ]);
        let lines = self.spawn_role(name, &args, marker).await;
        let line = lines.iter().find(|l| l.contains(marker)).unwrap();
        line.rsplit(' ').next().unwrap().to_string()
    }

    /// One more worker with its ops listener ([`Self::spawn_via`]); returns
    /// the listener's base URL.
    pub async fn start_worker_with_ops_via(&mut self, name: &str, db_url: &str, amqp: &str) -> String {
        self.spawn_via(name, &["worker"], db_url, amqp, "worker ops listening on")
            .await
    }

    /// One more API process ([`Self::spawn_via`]); returns its URL.
    pub async fn start_api_via(&mut self, name: &str, db_url: &str, amqp: &str) -> String {
        self.spawn_via(name, &["api"], db_url, amqp, "listening on").await
    }

    /// Starts one more worker that reaches the database at `db_url`.
    pub async fn start_worker_with_db(&mut self, name: &str, db_url: &str) -> usize {
        let prefix = self.prefix.clone().expect("PostgreSQL + RabbitMQ only");
        let cfg = self.config_path.to_str().unwrap().to_string();
        let amqp = amqp_url();
        let args = [
            "worker",
            "--database-url",
            db_url,
            "--amqp-url",
            &amqp,
            "--broker-prefix",
            &prefix,
            "--config",
            &cfg,
        ];
        let child = self
            .role_command(name, &args)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn worker");
        self.children.push(child);
        self.children.len() - 1
    }

    /// The index of the process started last (for [`Deployment::pid`]).
    pub fn newest_child(&self) -> usize {
        self.children.len() - 1
    }

    /// The process id of a child (`0` the API, `1` the first worker, …).
    pub fn pid(&self, index: usize) -> u32 {
        self.children[index].id().expect("child still running")
    }

    /// Waits up to `limit` for a child to exit and returns its status.
    pub async fn wait_exit(&mut self, index: usize, limit: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(limit, self.children[index].wait())
            .await
            .ok()
            .and_then(|r| r.ok())
    }

    /// Submits `verb` on a service with `body`; the action's uuid on 202,
    /// `None` on any other answer (a request that met a fault).
    pub async fn try_submit(&self, service: &str, verb: &str, body: &str) -> Option<String> {
        self.client().try_submit(service, verb, body).await
    }
}

// --- ops listeners -----------------------------------------------------------

impl Deployment {
    /// Starts one more worker process with its ops listener on a free port
    /// (PostgreSQL + RabbitMQ only); returns the listener's base URL, read
    /// from the "Stevedore worker ops listening on http://…" line.
    pub async fn start_worker_with_ops(&mut self, name: &str) -> String {
        self.spawn_listening(name, &["worker"], "worker ops listening on")
            .await
    }
}

// --- restarts ----------------------------------------------------------------

impl Deployment {
    /// Embedded only: starts `stevedore dev` again on the same data directory
    /// (after [`Self::kill`] of the first, say), as an operator restarting it
    /// would; the deployment's key becomes the new process's. Returns the new
    /// process's index.
    pub async fn restart_dev(&mut self) -> usize {
        assert_eq!(self.backend, Backend::Embedded, "embedded only");
        self.start_dev().await;
        self.children.len() - 1
    }
}
