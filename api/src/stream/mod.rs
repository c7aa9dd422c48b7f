//! The stream service: live action logs and the events stream, over
//! websockets or Server-Sent Events (the same routes; see [`transport`]).
//!
//! - [`Hub`]: one per process. A single task subscribes to the broker's update
//!   fan-out ([`Broker::subscribe_updates`]) and hands each update to the
//!   websocket clients it concerns, through one bounded queue per client.
//!   Events are indexed by namespace and logs by action uuid, so an update
//!   costs nothing for the clients it does not concern.
//! - [`logs_ws`]: `…/action/<uuid>/logs/` (tail, then follow until the action
//!   ends).
//! - [`events_ws`]: `…/events` (an `auth` frame, then every event of the
//!   caller's namespaces; resumable with `?since=<seq>`).
//! - [`transport`]: a websocket or an event stream ([`sse`]), which the two
//!   above write their frames to alike.
//! - [`socket_runtime`]: where the clients' tasks run (a runtime of their
//!   own in the `stevedore` binary, so a fan-out does not queue ahead of the
//!   actions in flight).
//!
//! **Invariant:** the hub never waits for a client. A client whose queue is
//! full (in messages, or in bytes: `[http] client_queue_bytes`) is dropped
//! from the hub and told so (an `error` frame, then close); nobody else
//! slows down.
//!
//! **Cost of a delivery:** an event is serialized once into shared bytes
//! ([`HubEvent::frame`]); a client's copy is a reference to them, and the
//! only per-client work is the queue slot and the websocket write. A socket
//! takes what its queue holds at once (up to [`MAX_BATCH`] deliveries),
//! writes those frames through its write buffer and flushes once, so a
//! client that fell behind catches up with a few large writes rather than
//! one system call per frame.
//!
//! **Invariant:** the database is the source of truth. Whenever the hub may
//! have missed updates (its subscription ended or fell behind), it tells every
//! client, and each one catches up from the store before going on.

pub mod events_ws;
pub mod logs_ws;
pub mod sequencer;
pub mod socket_runtime;
pub mod sse;
pub mod transport;

use crate::auth::{authenticate_presented, request_credentials, Caller, Presentation};
use crate::client_addr::ClientAddr;
use crate::error::ApiError;
use crate::input::integer;
use crate::ApiState;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::http::{HeaderMap, Method, Uri};
use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stevedore_core::auth::Credentials;
use stevedore_core::broker::DynBroker;
use stevedore_core::event::Event;
use stevedore_core::logline::LogLine;
use stevedore_core::messages::Update;
use stevedore_core::progress::ProgressEvent;
use stevedore_core::reconnect::Reconnect;
use stevedore_core::shutdown::Shutdown;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Messages one client may have queued before it counts as too slow and is
/// disconnected. An update is a shared pointer, so a full queue costs about
/// 16 bytes a slot plus the updates themselves (shared with other clients).
pub const CLIENT_BUFFER: usize = 1024;

/// Longest a single websocket write may take before the client is dropped
/// (a peer that stopped reading fills its TCP window, then writes block).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// First and longest wait between attempts to re-subscribe to the broker
/// (the hub's updates, and the revocations' control messages).
pub(crate) const RESUBSCRIBE_MIN: Duration = Duration::from_millis(100);
pub(crate) const RESUBSCRIBE_MAX: Duration = Duration::from_secs(5);

/// What a queued delivery counts for besides its text (its place in the
/// queue and its shared pointer).
const DELIVERY_OVERHEAD: usize = 64;

/// Most deliveries a socket takes from its queue before it flushes and looks
/// at its socket and the shutdown signal again.
pub const MAX_BATCH: usize = 64;

/// What the hub hands a client.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// An event, with its JSON frame serialized once for every client.
    Event(Arc<HubEvent>),
    /// Log lines of one action, in order.
    Logs(Arc<Vec<LogLine>>),
    /// The hub may have missed updates (it re-subscribed, or fell behind):
    /// catch up from the store.
    Gap,
    /// A live progress report of one action (ephemeral: no `seq`).
    Progress(Arc<HubProgress>),
}

impl Delivery {
    /// The bytes a client's queue holds for it: its text, plus a little for
    /// its slot (what [`ClientSlot::offer`] counts against the byte cap).
    pub fn queued_bytes(&self) -> usize {
        DELIVERY_OVERHEAD
            + match self {
                Delivery::Event(e) => e.frame.len(),
                Delivery::Logs(lines) => lines.iter().map(|l| l.log.len() + DELIVERY_OVERHEAD).sum(),
                Delivery::Gap => 0,
                Delivery::Progress(p) => p.frame.len() + p.logs_frame.len(),
            }
    }
}

/// A progress report as fanned out, with its two frames serialized once:
/// the events stream's and the logs stream's.
#[derive(Debug)]
pub struct HubProgress {
    /// The report.
    pub report: ProgressEvent,
    /// Its events stream frame (the report's JSON).
    pub frame: Utf8Bytes,
    /// Its logs stream frame (`{"type":"progress",…}`).
    pub logs_frame: Utf8Bytes,
}

impl HubProgress {
    /// The report with its frames.
    pub fn new(report: ProgressEvent) -> Self {
        let frame = serde_json::to_string(&report).unwrap_or_default().into();
        let logs_frame = report.logs_frame().to_string().into();
        HubProgress {
            report,
            frame,
            logs_frame,
        }
    }
}

/// An event as fanned out.
#[derive(Debug)]
pub struct HubEvent {
    /// The event.
    pub event: Event,
    /// Its websocket frame, serialized once; every client sends these same
    /// bytes (a clone is a reference count, not a copy).
    pub frame: Utf8Bytes,
}

impl HubEvent {
    /// The event with its frame.
    pub fn new(event: Event) -> Self {
        let frame = serde_json::to_string(&event).unwrap_or_default().into();
        HubEvent { event, frame }
    }
}

/// What a client's slots in the hub and its [`Subscription`] share.
#[derive(Default)]
struct ClientState {
    /// Bytes queued for the client and not yet taken.
    queued: AtomicUsize,
    /// Set (before the client's overflow token is cancelled) when its queue
    /// overflowed: a plain load for the socket to check before each
    /// delivery (asking the token takes its lock).
    overflowed: AtomicBool,
}

struct ClientSlot {
    tx: mpsc::Sender<Delivery>,
    /// Wakes the client when it overflows while it waits.
    overflow: CancellationToken,
    state: Arc<ClientState>,
    max_bytes: usize,
}

impl ClientSlot {
    /// Queues without waiting; a full queue (in messages, or in bytes unless
    /// it is empty) cancels the client. `size` is `d.queued_bytes()`
    /// (computed once for every client).
    /// Returns whether the client should stay registered.
    fn offer(&self, d: &Delivery, size: usize) -> bool {
        let queued = self.state.queued.load(Ordering::Acquire);
        if queued > 0 && queued + size > self.max_bytes {
            self.overflowed();
            return false;
        }
        match self.tx.try_send(d.clone()) {
            Ok(()) => {
                self.state.queued.fetch_add(size, Ordering::AcqRel);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflowed();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn overflowed(&self) {
        self.state.overflowed.store(true, Ordering::Release);
        self.overflow.cancel();
    }
}

#[derive(Default)]
struct Registry {
    /// Events clients by namespace, then client id.
    events: HashMap<String, HashMap<u64, ClientSlot>>,
    /// Logs clients by action, then client id.
    logs: HashMap<Uuid, HashMap<u64, ClientSlot>>,
}

struct HubInner {
    registry: Mutex<Registry>,
    next_id: AtomicU64,
    buffer: usize,
    max_bytes: usize,
    connected: AtomicBool,
    clients: AtomicUsize,
    /// Whether a subscriber task was started (there is at most one).
    started: AtomicBool,
}

/// The process's one fan-out point between the broker and websocket clients
/// (cheap to clone).
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

impl Hub {
    /// A hub whose clients may queue `buffer` messages of `max_bytes` in all
    /// (a single larger message still fits an empty queue); nothing feeds it
    /// until [`Hub::spawn_subscriber`] (or [`Hub::dispatch`] in tests).
    pub fn new(buffer: usize, max_bytes: usize) -> Self {
        // Registers the gauge at 0, so a stream listener reports it before its first client.
        metrics::gauge!(crate::ops::WEBSOCKET_CLIENTS).increment(0.0);
        metrics::gauge!(crate::ops::EVENT_STREAM_CLIENTS).increment(0.0);
        Hub {
            inner: Arc::new(HubInner {
                registry: Mutex::new(Registry::default()),
                next_id: AtomicU64::new(1),
                buffer: buffer.max(1),
                max_bytes: max_bytes.max(1),
                connected: AtomicBool::new(false),
                clients: AtomicUsize::new(0),
                started: AtomicBool::new(false),
            }),
        }
    }

    /// Starts the task that feeds the hub from `broker` until `shutdown`:
    /// it re-subscribes with backoff whenever the subscription ends. Only the
    /// first call starts one; later calls return a finished task.
    pub fn spawn_subscriber(&self, broker: DynBroker, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return tokio::spawn(async {});
        }
        let hub = self.clone();
        tokio::spawn(async move { hub.run_subscriber(broker, shutdown).await })
    }

    async fn run_subscriber(self, broker: DynBroker, shutdown: Shutdown) {
        let mut reconnect = Reconnect::new(RESUBSCRIBE_MIN, RESUBSCRIBE_MAX);
        // Live events in `seq` order, whatever order their publishers' updates
        // arrive in (see `sequencer`).
        let mut sequencer = sequencer::Sequencer::new(sequencer::HOLD);
        let subscribe = || broker.subscribe_updates();
        while let Some(mut updates) = reconnect
            .until_connected("subscribe to updates", &shutdown, subscribe)
            .await
        {
            self.inner.connected.store(true, Ordering::Relaxed);
            tracing::info!("stream hub subscribed to updates");
            // Whatever happened before this subscription is in the store:
            // every client catches up from there.
            self.dispatch_gap();
            loop {
                let deadline = sequencer.deadline();
                let item = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)),
                        if deadline.is_some() => {
                        let expired = sequencer.expire(tokio::time::Instant::now());
                        if expired.gap {
                            metrics::counter!(crate::ops::STREAM_SEQUENCE_GAPS).increment(1);
                            self.dispatch_gap();
                        }
                        self.dispatch_events(expired.events);
                        continue;
                    }
                    item = updates.next() => item,
                };
                match item {
                    Some(Ok(logs @ Update::Logs { .. })) => self.dispatch(logs),
                    // Progress has no `seq`: nothing to put in order.
                    Some(Ok(progress @ Update::Progress { .. })) => self.dispatch(progress),
                    Some(Ok(update)) => {
                        let now = tokio::time::Instant::now();
                        let mut ready = Vec::new();
                        for event in update.into_events() {
                            ready.extend(sequencer.push(event, now));
                        }
                        self.dispatch_events(ready);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "update subscription lost messages");
                        self.dispatch_gap();
                    }
                    None => break,
                }
            }
            // What was held goes out after a gap notice: something before
            // it may never have come, and a client that sent it would
            // otherwise replay from past the hole.
            let held = sequencer.drain();
            if !held.is_empty() {
                self.dispatch_gap();
                self.dispatch_events(held);
            }
            self.inner.connected.store(false, Ordering::Relaxed);
            tracing::warn!("update subscription ended; re-subscribing");
        }
    }

    /// Whether the hub currently holds a broker subscription.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// Clients currently registered.
    pub fn client_count(&self) -> usize {
        self.inner.clients.load(Ordering::Relaxed)
    }

    /// Hands one update to the clients it concerns.
    pub fn dispatch(&self, update: Update) {
        let mut reg = self.inner.registry.lock().unwrap_or_else(|p| p.into_inner());
        match update {
            Update::Event(event) => dispatch_event(&mut reg, event),
            Update::Events { events } => {
                for event in events {
                    dispatch_event(&mut reg, event);
                }
            }
            Update::Logs { lines, .. } => {
                let Some(uuid) = lines.first().map(|l| l.action_uuid) else {
                    return;
                };
                if reg.logs.contains_key(&uuid) {
                    offer_all(&mut reg.logs, &uuid, &Delivery::Logs(Arc::new(lines)));
                }
            }
            Update::Progress { reports } => {
                for report in reports {
                    dispatch_progress(&mut reg, report);
                }
            }
        }
    }

    /// Hands events to the clients they concern, in the order given, under
    /// one lock.
    fn dispatch_events(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut reg = self.inner.registry.lock().unwrap_or_else(|p| p.into_inner());
        for event in events {
            dispatch_event(&mut reg, event);
        }
    }

    /// Tells every client it may have missed updates.
    pub fn dispatch_gap(&self) {
        let mut reg = self.inner.registry.lock().unwrap_or_else(|p| p.into_inner());
        let reg = &mut *reg;
        let size = Delivery::Gap.queued_bytes();
        for map in reg.events.values_mut() {
            map.retain(|_, c| c.offer(&Delivery::Gap, size));
        }
        reg.events.retain(|_, m| !m.is_empty());
        for map in reg.logs.values_mut() {
            map.retain(|_, c| c.offer(&Delivery::Gap, size));
        }
        reg.logs.retain(|_, m| !m.is_empty());
    }

    /// Registers a client for the events of `namespaces`.
    pub fn subscribe_events(&self, namespaces: &[String]) -> Subscription {
        let (id, tx, rx, overflow) = self.new_client();
        let state = Arc::new(ClientState::default());
        let mut reg = self.inner.registry.lock().unwrap_or_else(|p| p.into_inner());
        for ns in namespaces {
            reg.events.entry(ns.clone()).or_default().insert(
                id,
                ClientSlot {
                    tx: tx.clone(),
                    overflow: overflow.clone(),
                    state: state.clone(),
                    max_bytes: self.inner.max_bytes,
                },
            );
        }
        Subscription {
            id,
            rx,
            overflow,
            state,
            key: Key::Events(namespaces.to_vec()),
            hub: self.clone(),
        }
    }

    /// Registers a client for the log lines and events of one action.
    pub fn subscribe_logs(&self, action: Uuid) -> Subscription {
        let (id, tx, rx, overflow) = self.new_client();
        let state = Arc::new(ClientState::default());
        let mut reg = self.inner.registry.lock().unwrap_or_else(|p| p.into_inner());
        reg.logs.entry(action).or_default().insert(
            id,
            ClientSlot {
                tx,
                overflow: overflow.clone(),
                state: state.clone(),
                max_bytes: self.inner.max_bytes,
            },
        );
        Subscription {
            id,
            rx,
            overflow,
            state,
            key: Key::Logs(action),
            hub: self.clone(),
        }
    }

    fn new_client(
        &self,
    ) -> (
        u64,
        mpsc::Sender<Delivery>,
        mpsc::Receiver<Delivery>,
        CancellationToken,
    ) {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.inner.buffer);
        self.inner.clients.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(crate::ops::WEBSOCKET_CLIENTS).increment(1.0);
        (id, tx, rx, CancellationToken::new())
    }

    fn unregister(&self, id: u64, key: &Key) {
        self.inner.clients.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(crate::ops::WEBSOCKET_CLIENTS).decrement(1.0);
        let mut reg = self.inner.registry.lock().unwrap_or_else(|p| p.into_inner());
        match key {
            Key::Events(namespaces) => {
                for ns in namespaces {
                    remove_client(&mut reg.events, ns, id);
                }
            }
            Key::Logs(uuid) => remove_client(&mut reg.logs, uuid, id),
        }
    }
}

/// Hands one event to the events clients of its namespace and, for an
/// action's event, to the logs clients of that action.
fn dispatch_event(reg: &mut Registry, event: Event) {
    let action_uuid = (event.object_type == "action")
        .then(|| Uuid::parse_str(&event.uuid).ok())
        .flatten();
    let watched_events = reg.events.contains_key(&event.namespace);
    let watched_logs = action_uuid.is_some_and(|u| reg.logs.contains_key(&u));
    if !watched_events && !watched_logs {
        return;
    }
    let e = Arc::new(HubEvent::new(event));
    let d = Delivery::Event(e.clone());
    if watched_events {
        offer_all(&mut reg.events, &e.event.namespace, &d);
    }
    if let (Some(u), true) = (action_uuid, watched_logs) {
        offer_all(&mut reg.logs, &u, &d);
    }
}

/// Hands one progress report to the events clients of its namespace and the
/// logs clients of its action.
fn dispatch_progress(reg: &mut Registry, report: ProgressEvent) {
    let watched_events = reg.events.contains_key(&report.namespace);
    let watched_logs = reg.logs.contains_key(&report.uuid);
    if !watched_events && !watched_logs {
        return;
    }
    let p = Arc::new(HubProgress::new(report));
    let d = Delivery::Progress(p.clone());
    if watched_events {
        offer_all(&mut reg.events, &p.report.namespace, &d);
    }
    if watched_logs {
        offer_all(&mut reg.logs, &p.report.uuid, &d);
    }
}

fn offer_all<K: std::hash::Hash + Eq>(map: &mut HashMap<K, HashMap<u64, ClientSlot>>, key: &K, d: &Delivery) {
    let size = d.queued_bytes();
    if let Some(clients) = map.get_mut(key) {
        clients.retain(|_, c| c.offer(d, size));
        if clients.is_empty() {
            map.remove(key);
        }
    }
}

fn remove_client<K: std::hash::Hash + Eq>(map: &mut HashMap<K, HashMap<u64, ClientSlot>>, key: &K, id: u64) {
    if let Some(clients) = map.get_mut(key) {
        clients.remove(&id);
        if clients.is_empty() {
            map.remove(key);
        }
    }
}

enum Key {
    Events(Vec<String>),
    Logs(Uuid),
}

/// One client's registration; dropping it unregisters the client.
pub struct Subscription {
    id: u64,
    rx: mpsc::Receiver<Delivery>,
    overflow: CancellationToken,
    state: Arc<ClientState>,
    key: Key,
    hub: Hub,
}

/// What a client's next wait produced.
#[derive(Debug)]
pub enum Next {
    /// A delivery.
    Delivery(Delivery),
    /// The client's queue overflowed: it must be disconnected.
    Overflowed,
}

impl Subscription {
    /// The next delivery, or [`Next::Overflowed`] once the queue overflowed
    /// (checked first, so an overflowed client stops at once).
    pub async fn next(&mut self) -> Next {
        if let Some(n) = self.try_next() {
            return n;
        }
        tokio::select! {
            biased;
            _ = self.overflow.cancelled() => Next::Overflowed,
            d = self.rx.recv() => match d {
                Some(d) => self.took(d),
                None => Next::Overflowed,
            },
        }
    }

    /// What [`Subscription::next`] would return at once, or `None` when the
    /// queue is empty (a socket drains its queue with it before it flushes).
    pub fn try_next(&mut self) -> Option<Next> {
        if self.state.overflowed.load(Ordering::Acquire) {
            return Some(Next::Overflowed);
        }
        match self.rx.try_recv() {
            Ok(d) => Some(self.took(d)),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => Some(Next::Overflowed),
        }
    }

    fn took(&self, d: Delivery) -> Next {
        self.state.queued.fetch_sub(d.queued_bytes(), Ordering::AcqRel);
        Next::Delivery(d)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unregister(self.id, &self.key);
    }
}

// --- the websocket side --------------------------------------------------

impl axum::extract::FromRef<StreamState> for ApiState {
    fn from_ref(s: &StreamState) -> ApiState {
        s.api.clone()
    }
}

/// What every stream handler needs.
#[derive(Clone)]
pub struct StreamState {
    /// Store, broker, credentials.
    pub api: ApiState,
    /// This process's hub.
    pub hub: Hub,
    /// Closes every socket (close frame "going away") when fired.
    pub shutdown: Shutdown,
}

/// Starts the hub's subscription task on `api`'s broker and returns the
/// stream routes (websockets and event streams). The task stops on `shutdown`.
pub fn stream_router(api: ApiState, shutdown: &Shutdown) -> Router {
    let hub = api.hub.clone();
    hub.spawn_subscriber(api.dispatcher.broker().clone(), shutdown.clone());
    routes(StreamState {
        api,
        hub,
        shutdown: shutdown.clone(),
    })
}

/// The stream routes over a given hub (tests use their own).
pub fn routes(state: StreamState) -> Router {
    use crate::openapi::{EVENTS_WS, EVENTS_WS_NS, LOGS_WS, LOGS_WS_NS};
    let mut r = Router::new();
    for p in LOGS_WS {
        r = r.route(p, get(logs_ws::handler));
    }
    for p in LOGS_WS_NS {
        r = r.route(p, get(logs_ws::handler_ns));
    }
    for p in EVENTS_WS {
        r = r.route(p, get(events_ws::handler));
    }
    for p in EVENTS_WS_NS {
        r = r.route(p, get(events_ws::handler_ns));
    }
    r.layer(axum::middleware::from_fn_with_state(
        state.api.clone(),
        crate::origin::refuse_cross_site,
    ))
    .layer(axum::middleware::map_response(crate::error::json_errors))
    .layer(axum::middleware::from_fn(crate::auth::page_challenge))
    .with_state(state)
}

/// A stream-only server (`stevedore stream`): the websocket routes, the
/// probes (`/readyz` also requires the hub's subscription) and JSON 404s.
pub fn standalone_router(api: ApiState, shutdown: &Shutdown) -> Router {
    let hub = api.hub.clone();
    hub.spawn_subscriber(api.dispatcher.broker().clone(), shutdown.clone());
    let state = StreamState {
        api,
        hub,
        shutdown: shutdown.clone(),
    };
    use crate::openapi::Part;
    let ops_routes = crate::ops::ops_router(
        state.api.dispatcher.clone(),
        &state.api.ops,
        &[Part::Probes, Part::Ops, Part::Stream],
    );
    let probes = Router::new()
        .route(crate::openapi::HEALTHZ, get(crate::routes::probes::healthz))
        .route(crate::openapi::READYZ, get(readyz))
        .fallback(not_found)
        .layer(axum::middleware::map_response(crate::error::json_errors))
        .with_state(state.clone())
        .merge(ops_routes);
    crate::ops::layers(routes(state).fallback_service(probes))
}

async fn readyz(axum::extract::State(s): axum::extract::State<StreamState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    // The database part from the shared, rate-limited check; the
    // subscription from the hub's own flag (no I/O).
    let checked = s
        .api
        .readiness
        .check(s.api.dispatcher.store(), s.api.dispatcher.broker())
        .await;
    let hub = s.hub.is_connected();
    let status = if checked.database.is_ok() && hub {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({
            "database": checked.database.err().unwrap_or_else(|| "ok".to_string()),
            "updates": if hub { "subscribed" } else { "not subscribed" },
            "clients": s.hub.client_count(),
        })),
    )
        .into_response()
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

/// Authenticates a stream request (a websocket handshake or an event
/// stream's request): `Authorization` (Basic or ApiKey) or the session
/// cookie, else `?user=&token=` (browsers can set no header on either). 401
/// when none is given or they are wrong. (Requests from another origin never
/// get here: see [`crate::origin`].)
pub async fn authenticate_handshake(
    state: &ApiState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    addr: ClientAddr,
) -> Result<Caller, ApiError> {
    let creds =
        match request_credentials(headers)? {
            Some(creds) => creds,
            None => match (query.get("user"), query.get("token")) {
                (Some(user), Some(token)) => Presentation::Key(Credentials {
                    user: user.clone(),
                    key: token.clone(),
                }),
                _ => return Err(ApiError::Unauthorized(
                    "authentication required: send Authorization: Basic base64(user:apikey) or ?user=&token="
                        .into(),
                )),
            },
        };
    authenticate_presented(state, &creds, addr.client).await
}

/// The namespaces a stream path may show: the caller's, or the one named in
/// the path (404 unless the caller belongs to it).
pub fn namespaces_for(caller: &Caller, ns: Option<&str>) -> Result<Vec<String>, ApiError> {
    match ns {
        None => Ok(caller.namespaces.clone()),
        Some(ns) if caller.namespaces.iter().any(|n| n == ns) => Ok(vec![ns.to_string()]),
        Some(ns) => Err(ApiError::NotFound(format!("namespace {ns} not found"))),
    }
}

/// The frame that tells a client something went wrong before the server
/// closes: `{"type":"error","data":{"errorMessage":"…"}}`.
pub fn error_frame(message: &str) -> String {
    json!({"type": "error", "data": {"errorMessage": message}}).to_string()
}

/// Why a client loop stopped.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Finished normally (logs: backlog sent or action ended).
    Done,
    /// The client went away or a write failed/timed out.
    Gone,
    /// An error to report to the client before closing.
    Error(String),
    /// The process is shutting down.
    Shutdown,
}

impl Stop {
    /// The close a client is told of (a websocket's close frame, an event
    /// stream's `close` event): its code and reason; none for a client
    /// that is gone.
    pub(crate) fn close_code(&self) -> Option<(u16, &'static str)> {
        match self {
            Stop::Done => Some((1000, "")),
            Stop::Gone => None,
            Stop::Error(_) => Some((1011, "error")),
            Stop::Shutdown => Some((1001, "server shutting down")),
        }
    }
}

/// Where a stream resumes: the `Last-Event-ID` an event stream's client
/// sends back when it reconnects, else `?since=`; `None` for neither (or
/// empty). 400 unless a non-negative integer.
pub fn resume_point(headers: &HeaderMap, query: &HashMap<String, String>) -> Result<Option<i64>, ApiError> {
    let (key, value) = match headers.get(LAST_EVENT_ID) {
        Some(v) => (
            "Last-Event-ID",
            v.to_str()
                .map_err(|_| ApiError::BadRequest("Last-Event-ID must be an integer".into()))?,
        ),
        None => match query.get("since") {
            Some(v) => ("since", v.as_str()),
            None => return Ok(None),
        },
    };
    match value.trim() {
        "" => Ok(None),
        v => integer(key, v, 0..=i64::MAX).map(Some),
    }
}

/// The header an event stream's client resumes with.
pub const LAST_EVENT_ID: &str = "last-event-id";

/// Per-socket read buffer. Clients only send pings and close frames (at
/// most 139 bytes each), so a small buffer saves most of a connection's
/// memory (tungstenite's default is 128 KiB); it grows for a larger frame.
/// tungstenite zeroes the free part before every read attempt, and a socket
/// polls its read side once per batch it sends, so it is kept this small.
pub const READ_BUFFER: usize = 512;
/// Bytes a socket gathers before it writes them out while it feeds a batch
/// (tungstenite's default is 128 KiB). A batch ends with a flush whatever its
/// size; this bounds what a busy socket keeps allocated between writes.
pub const WRITE_BUFFER: usize = 8 * 1024;
/// Largest frame a client may send.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// The websocket settings every stream socket uses.
pub(crate) fn configure(ws: axum::extract::ws::WebSocketUpgrade) -> axum::extract::ws::WebSocketUpgrade {
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
}

/// Sends a text frame (and whatever was fed before it), dropping the client
/// if the write does not complete within [`WRITE_TIMEOUT`].
pub(crate) async fn send_text(socket: &mut WebSocket, text: impl Into<Utf8Bytes>) -> Result<(), Stop> {
    match tokio::time::timeout(WRITE_TIMEOUT, socket.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Stop::Gone),
    }
}

/// Queues a text frame in the socket's write buffer (written out once the
/// buffer passes [`WRITE_BUFFER`], else by [`flush`]), dropping the client
/// if that write does not complete within [`WRITE_TIMEOUT`].
pub(crate) async fn feed_text(socket: &mut WebSocket, text: impl Into<Utf8Bytes>) -> Result<(), Stop> {
    within_write_timeout(socket.feed(Message::Text(text.into()))).await
}

/// Writes out what was fed, dropping the client if that does not complete
/// within [`WRITE_TIMEOUT`].
pub(crate) async fn flush(socket: &mut WebSocket) -> Result<(), Stop> {
    within_write_timeout(SinkExt::flush(socket)).await
}

/// Runs a write, [`Stop::Gone`] if it fails or takes longer than
/// [`WRITE_TIMEOUT`]. Most writes complete at once (into the buffer, or
/// the socket has room): only one that has to wait sets a timer (setting
/// one reads the clock and the runtime's shared handle).
async fn within_write_timeout(
    write: impl std::future::Future<Output = Result<(), axum::Error>>,
) -> Result<(), Stop> {
    tokio::pin!(write);
    let done = match futures::poll!(&mut write) {
        std::task::Poll::Ready(r) => Some(r),
        std::task::Poll::Pending => tokio::time::timeout(WRITE_TIMEOUT, write).await.ok(),
    };
    match done {
        Some(Ok(())) => Ok(()),
        _ => Err(Stop::Gone),
    }
}

/// Ends a socket: an error frame first if there is one, then a close frame.
pub(crate) async fn finish(mut socket: WebSocket, stop: Stop) {
    let Some((code, reason)) = stop.close_code() else {
        return;
    };
    if let Stop::Error(m) = &stop {
        let _ = send_text(&mut socket, error_frame(m)).await;
    }
    let close = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(WRITE_TIMEOUT, socket.send(close)).await;
    // Give the client a moment to answer the close, then drop the TCP connection.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// The message for a client whose queue overflowed.
pub(crate) fn overflow_message(what: &str) -> String {
    format!(
        "client too slow: its queue of {what} messages filled up (at most {CLIENT_BUFFER} messages \
         or [http] client_queue_bytes); disconnected"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use stevedore_core::event::EventKind;
    use stevedore_core::logline::StreamType;

    fn event(ns: &str, seq: i64) -> Event {
        Event {
            object_type: "action".into(),
            action: EventKind::Update,
            uuid: Uuid::new_v4().to_string(),
            resource_uri: "/api/audit/v1/action/x/".into(),
            state: "Success".into(),
            parents: vec![],
            datetime: Utc::now(),
            seq,
            namespace: ns.into(),
        }
    }

    async fn next_now(s: &mut Subscription) -> Option<Next> {
        tokio::time::timeout(Duration::from_millis(50), s.next())
            .await
            .ok()
    }

    #[test]
    fn last_event_id_wins_over_since_and_both_must_be_counts() {
        let q = |since: &str| HashMap::from([("since".to_string(), since.to_string())]);
        let h = |id: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(LAST_EVENT_ID, axum::http::HeaderValue::from_static(id));
            h
        };
        let none = HeaderMap::new();
        assert_eq!(resume_point(&none, &HashMap::new()).unwrap(), None);
        assert_eq!(resume_point(&none, &q("7")).unwrap(), Some(7));
        assert_eq!(resume_point(&h("42"), &q("7")).unwrap(), Some(42));
        assert_eq!(resume_point(&h(" "), &q("7")).unwrap(), None);
        for (headers, query) in [(h("x"), q("7")), (h("-1"), HashMap::new()), (none, q("1.5"))] {
            let e = resume_point(&headers, &query).unwrap_err();
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
        }
    }

    #[tokio::test]
    async fn events_reach_only_their_namespaces_clients() {
        let hub = Hub::new(8, 1 << 20);
        let mut a = hub.subscribe_events(&["acme".into(), "labs".into()]);
        let mut b = hub.subscribe_events(&["other".into()]);
        hub.dispatch(Update::Event(event("labs", 1)));
        match next_now(&mut a).await {
            Some(Next::Delivery(Delivery::Event(e))) => assert_eq!(e.event.seq, 1),
            other => panic!("{other:?}"),
        }
        assert!(next_now(&mut b).await.is_none());
        assert_eq!(hub.client_count(), 2);
        drop(a);
        drop(b);
        assert_eq!(hub.client_count(), 0);
        assert!(hub.inner.registry.lock().unwrap().events.is_empty());
    }

    #[tokio::test]
    async fn a_batch_of_events_reaches_each_namespace_in_order() {
        let hub = Hub::new(8, 1 << 20);
        let mut acme = hub.subscribe_events(&["acme".into()]);
        let mut labs = hub.subscribe_events(&["labs".into()]);
        let mine = Uuid::new_v4();
        let mut logs = hub.subscribe_logs(mine);
        let mut watched = event("labs", 3);
        watched.uuid = mine.to_string();
        hub.dispatch(Update::Events {
            events: vec![event("acme", 1), event("acme", 2), watched, event("acme", 4)],
        });
        for want in [1, 2, 4] {
            match next_now(&mut acme).await {
                Some(Next::Delivery(Delivery::Event(e))) => assert_eq!(e.event.seq, want),
                other => panic!("{other:?}"),
            }
        }
        assert!(next_now(&mut acme).await.is_none());
        match next_now(&mut labs).await {
            Some(Next::Delivery(Delivery::Event(e))) => assert_eq!(e.event.seq, 3),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            next_now(&mut logs).await,
            Some(Next::Delivery(Delivery::Event(_)))
        ));
    }

    #[tokio::test]
    async fn progress_reaches_its_namespace_and_its_actions_logs_clients_only() {
        let hub = Hub::new(8, 1 << 20);
        let mine = Uuid::new_v4();
        let mut events = hub.subscribe_events(&["acme".to_string()]);
        let mut other_ns = hub.subscribe_events(&["other".to_string()]);
        let mut logs = hub.subscribe_logs(mine);
        let mut other_logs = hub.subscribe_logs(Uuid::new_v4());
        let report = ProgressEvent {
            object_type: "action".into(),
            action: "progress".into(),
            uuid: mine,
            resource_uri: stevedore_core::action::action_uri(&mine),
            state: "In progress".into(),
            parents: vec![],
            datetime: chrono::Utc::now(),
            progress: 42,
            progress_message: "Copying".into(),
            namespace: "acme".into(),
        };
        hub.dispatch(Update::Progress {
            reports: vec![report],
        });
        match next_now(&mut events).await {
            Some(Next::Delivery(Delivery::Progress(p))) => {
                let v: serde_json::Value = serde_json::from_str(p.frame.as_str()).unwrap();
                assert_eq!(
                    (v["action"].as_str(), v["progress"].as_u64()),
                    (Some("progress"), Some(42))
                );
            }
            other => panic!("{other:?}"),
        }
        match next_now(&mut logs).await {
            Some(Next::Delivery(Delivery::Progress(p))) => {
                let v: serde_json::Value = serde_json::from_str(p.logs_frame.as_str()).unwrap();
                assert_eq!(
                    (v["type"].as_str(), v["progress_message"].as_str()),
                    (Some("progress"), Some("Copying"))
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(next_now(&mut other_ns).await.is_none());
        assert!(next_now(&mut other_logs).await.is_none());
    }

    #[tokio::test]
    async fn logs_clients_get_their_actions_lines_and_events() {
        let hub = Hub::new(8, 1 << 20);
        let mine = Uuid::new_v4();
        let mut s = hub.subscribe_logs(mine);
        let line = |u: Uuid| LogLine {
            action_uuid: u,
            seq: 1,
            log: "x".into(),
            timestamp: 0,
            stream: StreamType::Stdout,
        };
        hub.dispatch(Update::Logs {
            namespace: "acme".into(),
            lines: vec![line(Uuid::new_v4())],
        });
        assert!(next_now(&mut s).await.is_none());
        hub.dispatch(Update::Logs {
            namespace: "acme".into(),
            lines: vec![line(mine)],
        });
        assert!(matches!(
            next_now(&mut s).await,
            Some(Next::Delivery(Delivery::Logs(_)))
        ));
        let mut e = event("acme", 3);
        e.uuid = mine.to_string();
        hub.dispatch(Update::Event(e));
        assert!(matches!(
            next_now(&mut s).await,
            Some(Next::Delivery(Delivery::Event(_)))
        ));
        hub.dispatch_gap();
        assert!(matches!(
            next_now(&mut s).await,
            Some(Next::Delivery(Delivery::Gap))
        ));
    }

    /// Every client of a namespace gets the same event, whose frame was
    /// serialized once (the same bytes, not a copy each).
    #[tokio::test]
    async fn clients_share_one_serialized_frame() {
        let hub = Hub::new(8, 1 << 20);
        let mut a = hub.subscribe_events(&["acme".into()]);
        let mut b = hub.subscribe_events(&["acme".into()]);
        hub.dispatch(Update::Event(event("acme", 7)));
        let (Some(Next::Delivery(Delivery::Event(x))), Some(Next::Delivery(Delivery::Event(y)))) =
            (a.try_next(), b.try_next())
        else {
            panic!("both clients should have the event queued");
        };
        assert!(Arc::ptr_eq(&x, &y));
        assert_eq!(x.frame.as_str(), serde_json::to_string(&x.event).unwrap());
    }

    /// A socket drains its queue without waiting before it flushes: what is
    /// queued comes in order, an empty queue says so, and an overflow is
    /// reported before anything still queued.
    #[tokio::test]
    async fn try_next_takes_what_is_queued_and_reports_overflow_first() {
        let hub = Hub::new(2, 1 << 20);
        let mut s = hub.subscribe_events(&["acme".into()]);
        assert!(s.try_next().is_none());
        hub.dispatch(Update::Event(event("acme", 1)));
        hub.dispatch(Update::Event(event("acme", 2)));
        for want in [1, 2] {
            match s.try_next() {
                Some(Next::Delivery(Delivery::Event(e))) => assert_eq!(e.event.seq, want),
                other => panic!("{other:?}"),
            }
        }
        assert!(s.try_next().is_none());
        assert_eq!(
            s.state.queued.load(Ordering::Acquire),
            0,
            "what was taken is no longer counted"
        );
        for seq in 3..=5 {
            hub.dispatch(Update::Event(event("acme", seq)));
        }
        assert!(matches!(s.try_next(), Some(Next::Overflowed)));
        assert!(matches!(next_now(&mut s).await, Some(Next::Overflowed)));
    }

    /// A stalled client overflows its own small queue and is cut off; a
    /// client that keeps up sees every message, and the hub never waits.
    #[tokio::test]
    async fn a_stalled_client_overflows_and_is_dropped_without_slowing_others() {
        let hub = Hub::new(4, 1 << 20);
        let mut stalled = hub.subscribe_events(&["acme".into()]);
        let mut live = hub.subscribe_events(&["acme".into()]);
        let started = std::time::Instant::now();
        for seq in 1..=100 {
            hub.dispatch(Update::Event(event("acme", seq)));
            match next_now(&mut live).await {
                Some(Next::Delivery(Delivery::Event(e))) => assert_eq!(e.event.seq, seq),
                other => panic!("live client: {other:?}"),
            }
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        // Overflow is reported at once, before the queued messages.
        assert!(matches!(next_now(&mut stalled).await, Some(Next::Overflowed)));
        let reg = hub.inner.registry.lock().unwrap();
        assert_eq!(reg.events["acme"].len(), 1, "the stalled client was unregistered");
    }

    /// A client's queue is bounded in bytes too: a few large messages
    /// overflow it long before the message count does; a client that takes
    /// what it was sent makes room again.
    #[tokio::test]
    async fn a_queue_overflows_on_bytes_before_messages() {
        let big = |seq| {
            let mut e = event("acme", seq);
            e.resource_uri = "x".repeat(10_000);
            Update::Event(e)
        };
        let hub = Hub::new(1024, 25_000);
        let mut reader = hub.subscribe_events(&["acme".into()]);
        let mut stalled = hub.subscribe_events(&["acme".into()]);
        for seq in 1..=5 {
            hub.dispatch(big(seq));
            assert!(matches!(
                next_now(&mut reader).await,
                Some(Next::Delivery(Delivery::Event(_)))
            ));
        }
        assert!(matches!(next_now(&mut stalled).await, Some(Next::Overflowed)));
        let reg = hub.inner.registry.lock().unwrap();
        assert_eq!(reg.events["acme"].len(), 1, "only the reader stays");
    }
}
