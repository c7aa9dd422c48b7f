//! End-to-end harness: runs the real `stevedore` binary as a user would —
//! either `stevedore dev` (SQLite + in-process broker) or `stevedore migrate`,
//! `api` and `worker` on PostgreSQL + RabbitMQ — and talks HTTP to it.
//! Each deployment gets its own database, data directory and broker prefix,
//! and removes them when dropped.

use reqwest::{header::HeaderMap, Method, StatusCode};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use stevedore_shared::testing::{amqp_url, unique_prefix, TestDatabase};
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

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_stevedore")
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
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("stevedore.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut d = Deployment {
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
        };
        match backend {
            Backend::Embedded => d.start_dev().await,
            Backend::PostgresRabbit => d.start_production().await,
        }
        d
    }

    fn log_file(&self, name: &str) -> std::fs::File {
        std::fs::File::create(self.dir.path().join(format!("{name}.log"))).expect("log file")
    }

    /// Spawns a long-running role and waits for the stdout line containing
    /// `ready_marker`; returns the lines read until then.
    pub async fn spawn_role(&mut self, name: &str, args: &[&str], ready_marker: &str) -> Vec<String> {
        let mut child = Command::new(bin())
            .args(args)
            .env_remove("STEVEDORE_DATABASE_URL")
            .env("RUST_LOG", "info,stevedore=debug")
            .envs(self.role_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(self.log_file(name)))
            .kill_on_drop(true)
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
            let log =
                std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default();
            panic!("{name} did not start; stdout: {seen:?}\nstderr:\n{log}");
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

    async fn start_production(&mut self) {
        let db = TestDatabase::create().await;
        self.db_url = db.url().to_string();
        self._db = Some(db);
        let prefix = unique_prefix("e2e");
        self.prefix = Some(prefix);
        let db_url = self.db_url.clone();
        run_cli(&["migrate", "--database-url", &db_url], &[]).await;
        let (user, key) = self.create_user("alice").await;
        self.user = user;
        self.key = key;
        self.url = self.spawn_listening("api", "api", "listening on").await;
        self.start_worker("worker-1").await;
    }

    /// Spawns `stevedore <role> --listen 127.0.0.1:0` on this deployment's
    /// database, broker prefix and config (PostgreSQL + RabbitMQ only), waits
    /// for its "… listening on http://ADDR" line, and returns the URL.
    async fn spawn_listening(&mut self, name: &str, role: &str, marker: &str) -> String {
        self.spawn_listening_with(name, &[role], marker).await
    }

    /// [`Self::spawn_listening`] with flags after the role (`["api", "--with-stream"]`).
    async fn spawn_listening_with(&mut self, name: &str, role: &[&str], marker: &str) -> String {
        assert_eq!(self.backend, Backend::PostgresRabbit);
        let (db_url, prefix) = (self.db_url.clone(), self.prefix.clone().unwrap());
        let cfg = self.config_path.to_str().unwrap().to_string();
        let amqp = amqp_url();
        let mut args = role.to_vec();
        args.extend([
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db_url,
            "--amqp-url",
            &amqp,
            "--broker-prefix",
            &prefix,
            "--config",
            &cfg,
        ]);
        let lines = self.spawn_role(name, &args, marker).await;
        let line = lines.iter().find(|l| l.contains(marker)).unwrap();
        line.rsplit(' ').next().unwrap().to_string()
    }

    /// Starts one more worker process (PostgreSQL + RabbitMQ only). Returns its index.
    pub async fn start_worker(&mut self, name: &str) -> usize {
        assert_eq!(self.backend, Backend::PostgresRabbit);
        let (db_url, prefix) = (self.db_url.clone(), self.prefix.clone().unwrap());
        let cfg = self.config_path.to_str().unwrap().to_string();
        let amqp = amqp_url();
        let args = [
            "worker",
            "--database-url",
            &db_url,
            "--amqp-url",
            &amqp,
            "--broker-prefix",
            &prefix,
            "--config",
            &cfg,
        ];
        let child = Command::new(bin())
            .args(args)
            .env("RUST_LOG", "info,stevedore=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::from(self.log_file(name)))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn worker");
        self.children.push(child);
        self.children.len() - 1
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
        self.spawn_listening(name, "api", "listening on").await
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
    pub async fn store(&self) -> stevedore_shared::store::DynStore {
        stevedore_shared::store::connect(&self.db_url)
            .await
            .expect("open store")
    }

    /// Sends SIGKILL to a child process.
    pub async fn kill(&mut self, index: usize) {
        let _ = self.children[index].kill().await;
    }
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
                    use stevedore_shared::broker::{amqp::AmqpBroker, BrokerNames};
                    if let Ok(b) = AmqpBroker::connect(&amqp_url(), BrokerNames::new(prefix)).await {
                        let _ = b.delete_topology().await;
                    }
                });
            })
            .join();
        }
    }
}

/// Generates one `#[tokio::test]` per backend for each listed test function
/// `async fn name(d: &mut Deployment)`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let mut d = $crate::support::Deployment::start($crate::support::Backend::Embedded).await;
                    super::$name(&mut d).await;
                }
            )*
        }
        mod postgres_rabbitmq {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let mut d = $crate::support::Deployment::start($crate::support::Backend::PostgresRabbit).await;
                    super::$name(&mut d).await;
                }
            )*
        }
    };
}

// --- websockets (the stream service) -----------------------------------------

/// A client websocket.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a websocket test waits for a frame.
pub const WS_WAIT: Duration = Duration::from_secs(30);

impl Deployment {
    /// Starts a `stevedore stream` process (PostgreSQL + RabbitMQ only) and
    /// returns its base URL.
    pub async fn start_stream(&mut self, name: &str) -> String {
        self.spawn_listening(name, "stream", "listening on").await
    }

    /// Where a browser opens the dashboard: the dev server itself, or
    /// (PostgreSQL + RabbitMQ) a new `stevedore api --with-stream` process,
    /// so the page and its websockets share one origin.
    pub async fn dashboard_url(&mut self) -> String {
        match self.backend {
            Backend::Embedded => self.url.clone(),
            Backend::PostgresRabbit => {
                self.spawn_listening_with("api-ui", &["api", "--with-stream"], "listening on")
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

/// Opens a websocket on `base` (an `http://` URL) + `path`, with Basic auth
/// like the SDKs send. Returns the handshake's HTTP status on refusal.
pub async fn ws_connect(base: &str, path: &str, auth: Option<(&str, &str)>) -> Result<Ws, u16> {
    use base64::Engine;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}{}", base.replacen("http://", "ws://", 1), path);
    let mut req = url.into_client_request().expect("websocket request");
    req.headers_mut()
        .insert("User-Agent", "stevedore-tests/1.0".parse().unwrap());
    if let Some((u, k)) = auth {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{k}"));
        req.headers_mut()
            .insert("Authorization", format!("Basic {b}").parse().unwrap());
    }
    match tokio::time::timeout(WS_WAIT, tokio_tungstenite::connect_async(req)).await {
        Err(_) => panic!("websocket handshake to {path} timed out"),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => Err(resp.status().as_u16()),
        Ok(Err(e)) => panic!("websocket handshake to {path} failed: {e}"),
    }
}

/// What a websocket produced next.
#[derive(Debug)]
pub enum WsNext {
    /// A text frame, parsed as JSON.
    Json(Value),
    /// The server sent a close frame (with its code).
    Closed(u16),
    /// The connection ended without a close frame.
    Ended,
    /// Nothing arrived within the wait.
    Silent,
}

/// The next text frame or close, skipping pings and pongs.
pub async fn ws_next(ws: &mut Ws, wait: Duration) -> WsNext {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return WsNext::Silent,
            Ok(None) | Ok(Some(Err(_))) => return WsNext::Ended,
            Ok(Some(Ok(Message::Text(t)))) => {
                return WsNext::Json(
                    serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {t}")),
                )
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                return WsNext::Closed(frame.map(|f| u16::from(f.code)).unwrap_or(1005))
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// The next JSON frame; panics on close, end or silence.
pub async fn ws_json(ws: &mut Ws) -> Value {
    match ws_next(ws, WS_WAIT).await {
        WsNext::Json(v) => v,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// Every frame until the server closes the socket; panics if it does not
/// within [`WS_WAIT`]. Returns the frames and the close code.
pub async fn ws_until_close(ws: &mut Ws) -> (Vec<Value>, u16) {
    let mut frames = vec![];
    loop {
        match ws_next(ws, WS_WAIT).await {
            WsNext::Json(v) => frames.push(v),
            WsNext::Closed(code) => return (frames, code),
            other => panic!(
                "socket did not close cleanly: {other:?} after {} frames",
                frames.len()
            ),
        }
    }
}

/// Closes the broker connections of this deployment's processes whose name
/// ends in `-<role>` (`consume`, `publish`), as a RabbitMQ restart would.
pub async fn close_amqp_connections(prefix: &str, role: &str) -> usize {
    let out = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "-q",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .await
        .expect("rabbitmqctl must be installed for this test");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let name = format!("\"{prefix}-{role}\"");
    let pids: Vec<String> = listing
        .lines()
        .filter(|l| l.contains(&name))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    for pid in &pids {
        let _ = Command::new("rabbitmqctl")
            .args(["close_connection", pid, "test"])
            .output()
            .await;
    }
    pids.len()
}

// ------------------------------------------------------------------ faults

/// A config for fault tests: leases long enough to ride out a short database
/// outage, a short shutdown deadline, and a `mark` operation whose command
/// appends `start <uuid>` and `end <uuid>` lines to `marks` (so a test can see
/// whether two runs of one action ever overlapped; it takes about 200 ms).
pub fn fault_config(marks: &std::path::Path) -> String {
    let marks = marks.display();
    format!(
        r#"
[relay]
redispatch_after = "15s"

[worker]
concurrency = 8
lease = "8s"
heartbeat = "1s"
kill_grace = "1s"
shutdown_deadline = "2s"

[[operation]]
object = "service"
verb = "mark"
exec = ["sh", "-c", "trap 'echo \"end $STEVEDORE_ACTION_UUID\" >> {marks}; exit 143' TERM; echo \"start $STEVEDORE_ACTION_UUID\" >> {marks}; sleep 0.2; echo \"end $STEVEDORE_ACTION_UUID\" >> {marks}; echo marked"]

[[operation]]
object = "service"
verb = "noop"
handler = "noop"

[[operation]]
object = "service"
verb = "sleep"
handler = "sleep"
"#
    )
}

/// Checks a marks file written by the `mark` operation: no action ever
/// started while a run of it was still going. Returns how many runs each
/// action had.
pub fn check_marks(marks: &std::path::Path) -> std::collections::HashMap<String, usize> {
    let text = std::fs::read_to_string(marks).unwrap_or_default();
    let mut open: std::collections::HashMap<String, bool> = Default::default();
    let mut runs: std::collections::HashMap<String, usize> = Default::default();
    for (n, line) in text.lines().enumerate() {
        let Some((what, uuid)) = line.split_once(' ') else {
            panic!("marks line {n}: {line:?}");
        };
        let running = open.entry(uuid.to_string()).or_default();
        match what {
            "start" => {
                assert!(!*running, "action {uuid} started twice at once (marks line {n})");
                *running = true;
                *runs.entry(uuid.to_string()).or_default() += 1;
            }
            "end" => *running = false,
            _ => panic!("marks line {n}: {line:?}"),
        }
    }
    runs
}

/// A TCP proxy in the test process that can cut every connection and refuse
/// new ones for a while: a database that becomes unreachable, then returns.
pub struct TcpProxy {
    pub addr: std::net::SocketAddr,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cuts: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on 127.0.0.1:0 and forwards to `target`.
    pub async fn start(target: std::net::SocketAddr) -> TcpProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let (d, c) = (down.clone(), cuts.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    drop(inbound); // refused: closed at once
                    continue;
                }
                let mut cut = c.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        TcpProxy {
            addr,
            down,
            cuts,
            task,
        }
    }

    /// Cuts every open connection and refuses new ones until [`Self::resume`].
    pub fn cut(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Accepts connections again.
    pub fn resume(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// `url` (`scheme://user@host:port/db…`) pointed at this proxy.
    pub fn url_for(&self, url: &str) -> String {
        with_address(url, self.addr)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// `url` (`scheme://[user@]host:port/…`) with `host:port` replaced by `addr`.
pub fn with_address(url: &str, addr: std::net::SocketAddr) -> String {
    let start = url
        .rfind('@')
        .map(|i| i + 1)
        .unwrap_or(url.find("://").unwrap() + 3);
    let end = url[start..].find('/').map(|i| start + i).unwrap_or(url.len());
    format!("{}{}{}", &url[..start], addr, &url[end..])
}

/// The host:port a database URL points at.
pub fn db_addr(url: &str) -> std::net::SocketAddr {
    use std::net::ToSocketAddrs;
    let start = url
        .rfind('@')
        .map(|i| i + 1)
        .unwrap_or(url.find("://").unwrap() + 3);
    let end = url[start..].find('/').map(|i| start + i).unwrap_or(url.len());
    url[start..end]
        .replace("localhost", "127.0.0.1")
        .to_socket_addrs()
        .expect("database address")
        .next()
        .unwrap()
}

/// Closes, from the RabbitMQ side, the connections whose name starts with
/// `<prefix>-` and ends with one of `roles` (`publish`, `consume`): only this
/// deployment's, never other tests'. Returns how many were closed.
pub async fn close_rabbit_connections(prefix: &str, roles: &[&str]) -> usize {
    let out = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "pid",
            "client_properties",
            "-q",
            "--no-table-headers",
        ])
        .output()
        .await
        .expect("rabbitmqctl list_connections");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut closed = 0;
    for line in text.lines() {
        let Some((pid, props)) = line.split_once('\t') else {
            continue;
        };
        let wanted = roles
            .iter()
            .any(|r| props.contains(&format!("{{\"connection_name\",\"{prefix}-{r}\"}}")));
        if wanted {
            let st = Command::new("rabbitmqctl")
                .args(["close_connection", pid.trim(), "fault test"])
                .output()
                .await
                .expect("rabbitmqctl close_connection");
            if st.status.success() {
                closed += 1;
            }
        }
    }
    closed
}

impl Deployment {
    /// Starts `stevedore migrate`, `api` and one worker on PostgreSQL +
    /// RabbitMQ, with the api and workers reaching the database through
    /// `proxy` (the test itself still reaches it directly through `db_url`).
    pub async fn start_via_proxy(config: &str, proxy: &TcpProxy) -> Deployment {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("stevedore.toml");
        std::fs::write(&config_path, config).expect("write config");
        let db = TestDatabase::create().await;
        let prefix = unique_prefix("fault");
        let mut d = Deployment {
            backend: Backend::PostgresRabbit,
            url: String::new(),
            user: String::new(),
            key: String::new(),
            db_url: db.url().to_string(),
            prefix: Some(prefix.clone()),
            config_path,
            role_env: vec![],
            children: vec![],
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            _db: Some(db),
            dir,
        };
        let db_url = d.db_url.clone();
        run_cli(&["migrate", "--database-url", &db_url], &[]).await;
        let (user, key) = d.create_user("alice").await;
        d.user = user;
        d.key = key;
        let role_db = proxy.url_for(&db_url);
        let cfg = d.config_path.to_str().unwrap().to_string();
        let amqp = amqp_url();
        let lines = d
            .spawn_role(
                "api",
                &[
                    "api",
                    "--listen",
                    "127.0.0.1:0",
                    "--database-url",
                    &role_db,
                    "--amqp-url",
                    &amqp,
                    "--broker-prefix",
                    &prefix,
                    "--config",
                    &cfg,
                ],
                "listening on",
            )
            .await;
        let line = lines.iter().find(|l| l.contains("listening on")).unwrap();
        d.url = line.rsplit(' ').next().unwrap().to_string();
        d.start_worker_with_db("worker-1", &role_db).await;
        d
    }

    /// Spawns `stevedore <role> --listen 127.0.0.1:0` on this deployment's
    /// broker prefix and config, reaching the database at `db_url` and
    /// RabbitMQ at `amqp` (through a proxy, say); returns the URL its
    /// "… `marker` http://ADDR" line names.
    pub async fn spawn_via(
        &mut self,
        name: &str,
        role: &str,
        db_url: &str,
        amqp: &str,
        marker: &str,
    ) -> String {
        let prefix = self.prefix.clone().unwrap();
        let cfg = self.config_path.to_str().unwrap().to_string();
        let args = [
            role,
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
        ];
        let lines = self.spawn_role(name, &args, marker).await;
        let line = lines.iter().find(|l| l.contains(marker)).unwrap();
        line.rsplit(' ').next().unwrap().to_string()
    }

    /// One more worker with its ops listener ([`Self::spawn_via`]); returns
    /// the listener's base URL.
    pub async fn start_worker_with_ops_via(&mut self, name: &str, db_url: &str, amqp: &str) -> String {
        self.spawn_via(name, "worker", db_url, amqp, "worker ops listening on")
            .await
    }

    /// One more API process ([`Self::spawn_via`]); returns its URL.
    pub async fn start_api_via(&mut self, name: &str, db_url: &str, amqp: &str) -> String {
        self.spawn_via(name, "api", db_url, amqp, "listening on").await
    }

    /// Starts one more worker that reaches the database at `db_url`.
    pub async fn start_worker_with_db(&mut self, name: &str, db_url: &str) -> usize {
        let prefix = self.prefix.clone().unwrap();
        let cfg = self.config_path.to_str().unwrap().to_string();
        let amqp = amqp_url();
        let child = Command::new(bin())
            .args([
                "worker",
                "--database-url",
                db_url,
                "--amqp-url",
                &amqp,
                "--broker-prefix",
                &prefix,
                "--config",
                &cfg,
            ])
            .env_remove("STEVEDORE_DATABASE_URL")
            .env("RUST_LOG", "info,stevedore=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::from(self.log_file(name)))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn worker");
        self.children.push(child);
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
        let resp = self
            .http
            .post(format!("{}/api/app/v1/service/{service}/{verb}/", self.url))
            .basic_auth(&self.user, Some(&self.key))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .ok()?;
        if resp.status() != StatusCode::ACCEPTED {
            return None;
        }
        let json: Value = resp.json().await.ok()?;
        json["uuid"].as_str().map(str::to_string)
    }
}

// --- ops listeners ---------------------------------------------------------

/// A plain GET with optional headers: status, headers and body text (for
/// `/metrics`, which is not JSON).
pub async fn get_text(url: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
    let mut req = reqwest::Client::new().get(url).timeout(Duration::from_secs(30));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap_or_default())
}

impl Deployment {
    /// Starts one more worker process with its ops listener on a free port
    /// (PostgreSQL + RabbitMQ only); returns the listener's base URL, read
    /// from the "Stevedore worker ops listening on http://…" line.
    pub async fn start_worker_with_ops(&mut self, name: &str) -> String {
        self.spawn_listening(name, "worker", "worker ops listening on")
            .await
    }
}
