//! Polling costs a bounded number of store calls, whatever the data: the
//! QNAP event poll makes the same two calls for the latest events of a
//! tenant whose events are few among thousands of others' (it used to read
//! back in windows of 1,000 and look every action up on its own), and
//! `/readyz` pings the database and the broker at most once per period
//! however many probes arrive.
//!
//! The router runs in process on an in-memory SQLite store wrapped in a
//! store that counts each call.

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stevedore_api::{router, ApiState};
use stevedore_broker::memory::MemoryBroker;
use stevedore_core::action::Action;
use stevedore_core::auth::{generate_api_key, hash_api_key};
use stevedore_core::config::{FileConfig, EXAMPLE_CONFIG};
use stevedore_core::dispatch::Dispatcher;
use stevedore_core::event::Event;
use stevedore_core::logline::{LogLine, NewLogLine};
use stevedore_core::object::Object;
use stevedore_core::session::{NewSession, Session};
use stevedore_core::state::ActionState;
use stevedore_core::store::prelude::*;
use stevedore_core::store::*;
use stevedore_core::syslog::{NewSystemLog, Pruned, SystemLogEntry, SystemLogFilter};
use stevedore_core::webhook::{
    Attempt, Delivery, DueDelivery, NewDelivery, NewWebhook, Webhook, WebhookTarget,
};
use stevedore_core::Result;
use tower::ServiceExt;
use uuid::Uuid;

/// A store that counts the calls made to it, by method.
struct CountingStore {
    inner: DynStore,
    calls: Mutex<HashMap<&'static str, usize>>,
}

impl CountingStore {
    fn count(&self, method: &'static str) {
        *self.calls.lock().unwrap().entry(method).or_default() += 1;
    }

    fn take(&self) -> HashMap<&'static str, usize> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

#[allow(unused_variables)]
#[async_trait]
impl Database for CountingStore {
    async fn migrate(&self) -> Result<()> {
        self.count("migrate");
        self.inner.migrate().await
    }

    async fn ping(&self) -> Result<()> {
        self.count("ping");
        self.inner.ping().await
    }

    async fn begin_changes(&self) -> Result<Box<dyn stevedore_core::lifecycle::Driver>> {
        self.count("begin_changes");
        self.inner.begin_changes().await
    }
}

#[async_trait]
impl Tenancy for CountingStore {
    async fn create_user(&self, name: &str, namespaces: &[String]) -> Result<User> {
        self.count("create_user");
        self.inner.create_user(name, namespaces).await
    }

    async fn get_user(&self, name: &str) -> Result<Option<User>> {
        self.count("get_user");
        self.inner.get_user(name).await
    }

    async fn set_admin(&self, name: &str, admin: bool) -> Result<()> {
        self.count("set_admin");
        self.inner.set_admin(name, admin).await
    }

    async fn add_api_key(&self, user: &str, key_digest: &str) -> Result<i64> {
        self.count("add_api_key");
        self.inner.add_api_key(user, key_digest).await
    }

    async fn credentials(&self, user: &str) -> Result<Option<(User, Vec<StoredKey>)>> {
        self.count("credentials");
        self.inner.credentials(user).await
    }

    async fn api_keys(&self, user: &str) -> Result<Vec<ApiKeyInfo>> {
        self.count("api_keys");
        self.inner.api_keys(user).await
    }

    async fn record_key_use(&self, id: i64) -> Result<()> {
        self.count("record_key_use");
        self.inner.record_key_use(id).await
    }

    async fn revoke_api_key(&self, user: &str, id: i64) -> Result<RevokedKey> {
        self.count("revoke_api_key");
        self.inner.revoke_api_key(user, id).await
    }

    async fn credential_revision(&self) -> Result<i64> {
        self.count("credential_revision");
        self.inner.credential_revision().await
    }

    async fn create_session(&self, session: &NewSession) -> Result<()> {
        self.count("create_session");
        self.inner.create_session(session).await
    }

    async fn session(&self, digest: &str) -> Result<Option<Session>> {
        self.count("session");
        self.inner.session(digest).await
    }

    async fn delete_session(&self, digest: &str) -> Result<Option<String>> {
        self.count("delete_session");
        self.inner.delete_session(digest).await
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn get_object(&self, scope: Scope<'_>, uuid: Uuid) -> Result<Option<Object>> {
        self.count("get_object");
        self.inner.get_object(scope, uuid).await
    }

    async fn list_objects(
        &self,
        scope: Scope<'_>,
        filter: &ObjectFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Page<Object>> {
        self.count("list_objects");
        self.inner.list_objects(scope, filter, limit, offset).await
    }

    async fn object_refs(
        &self,
        scope: Scope<'_>,
        filter: &ObjectFilter,
        limit: i64,
    ) -> Result<Vec<(Uuid, String)>> {
        self.count("object_refs");
        self.inner.object_refs(scope, filter, limit).await
    }
}

#[async_trait]
impl ActionStore for CountingStore {
    async fn get_action(&self, scope: Scope<'_>, uuid: Uuid) -> Result<Option<Action>> {
        self.count("get_action");
        self.inner.get_action(scope, uuid).await
    }

    async fn list_actions(
        &self,
        scope: Scope<'_>,
        filter: &ActionFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Page<Action>> {
        self.count("list_actions");
        self.inner.list_actions(scope, filter, limit, offset).await
    }

    async fn queue_places(
        &self,
        scope: Scope<'_>,
        uuids: &[Uuid],
    ) -> Result<std::collections::HashMap<Uuid, stevedore_core::action::QueuePlace>> {
        self.count("queue_places");
        self.inner.queue_places(scope, uuids).await
    }

    async fn unsent_outbox(&self, min_age: Duration, limit: i64) -> Result<Vec<OutboxEntry>> {
        self.count("unsent_outbox");
        self.inner.unsent_outbox(min_age, limit).await
    }

    async fn mark_outbox_sent(&self, ids: &[i64]) -> Result<()> {
        self.count("mark_outbox_sent");
        self.inner.mark_outbox_sent(ids).await
    }

    async fn claim_actions(&self, uuids: &[Uuid], owner: &str, lease: Duration) -> Result<Vec<Claim>> {
        self.count("claim_actions");
        self.inner.claim_actions(uuids, owner, lease).await
    }

    async fn heartbeat(&self, uuid: Uuid, token: LeaseToken, lease: Duration) -> Result<Option<ActionState>> {
        self.count("heartbeat");
        self.inner.heartbeat(uuid, token, lease).await
    }

    async fn record_progress(
        &self,
        writes: &[stevedore_core::progress::ProgressWrite],
    ) -> Result<Vec<stevedore_core::lifecycle::StoredAction>> {
        self.count("record_progress");
        self.inner.record_progress(writes).await
    }

    async fn append_logs(
        &self,
        uuid: Uuid,
        token: Option<LeaseToken>,
        lines: &[NewLogLine],
    ) -> Result<Vec<LogLine>> {
        self.count("append_logs");
        self.inner.append_logs(uuid, token, lines).await
    }

    async fn logs(&self, uuid: Uuid, tail: Option<i64>) -> Result<Vec<LogLine>> {
        self.count("logs");
        self.inner.logs(uuid, tail).await
    }

    async fn logs_after(&self, uuid: Uuid, after: i64, limit: i64) -> Result<Vec<LogLine>> {
        self.count("logs_after");
        self.inner.logs_after(uuid, after, limit).await
    }

    async fn expired_leases(&self, limit: i64) -> Result<Vec<Uuid>> {
        self.count("expired_leases");
        self.inner.expired_leases(limit).await
    }

    async fn redispatch_unclaimed(&self, older_than: Duration, limit: i64) -> Result<Vec<Uuid>> {
        self.count("redispatch_unclaimed");
        self.inner.redispatch_unclaimed(older_than, limit).await
    }

    async fn redispatch_actions(&self, uuids: &[Uuid]) -> Result<Vec<Uuid>> {
        self.count("redispatch_actions");
        self.inner.redispatch_actions(uuids).await
    }
}

#[async_trait]
impl EventStore for CountingStore {
    async fn events_after(&self, scope: Scope<'_>, after: i64, limit: i64) -> Result<Vec<Event>> {
        self.count("events_after");
        self.inner.events_after(scope, after, limit).await
    }

    async fn poll_events(&self, scope: Scope<'_>, poll: EventPoll, limit: i64) -> Result<Vec<PolledEvent>> {
        self.count("poll_events");
        self.inner.poll_events(scope, poll, limit).await
    }

    async fn last_event_seq(&self) -> Result<i64> {
        self.count("last_event_seq");
        self.inner.last_event_seq().await
    }
}

#[async_trait]
impl SystemLogStore for CountingStore {
    async fn append_system_log(&self, entries: &[NewSystemLog]) -> Result<()> {
        self.count("append_system_log");
        self.inner.append_system_log(entries).await
    }

    async fn system_log(
        &self,
        scope: Scope<'_>,
        filter: &SystemLogFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<SystemLogEntry>> {
        self.count("system_log");
        self.inner.system_log(scope, filter, limit, offset).await
    }
}

#[async_trait]
impl Retention for CountingStore {
    async fn prune(&self, older_than: Duration, max_system_log: i64) -> Result<Pruned> {
        self.count("prune");
        self.inner.prune(older_than, max_system_log).await
    }
}

#[async_trait]
impl WorkerRegistry for CountingStore {
    async fn register_worker(
        &self,
        worker: &stevedore_core::workers::NewWorker,
        lease: Duration,
    ) -> Result<()> {
        self.count("register_worker");
        self.inner.register_worker(worker, lease).await
    }

    async fn worker_heartbeat(&self, id: &str, running: &[Uuid], lease: Duration) -> Result<bool> {
        self.count("worker_heartbeat");
        self.inner.worker_heartbeat(id, running, lease).await
    }

    async fn deregister_worker(&self, id: &str) -> Result<()> {
        self.count("deregister_worker");
        self.inner.deregister_worker(id).await
    }

    async fn live_workers(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<Page<stevedore_core::workers::WorkerInfo>> {
        self.count("live_workers");
        self.inner.live_workers(limit, offset).await
    }

    async fn live_worker(&self, id: &str) -> Result<Option<stevedore_core::workers::WorkerInfo>> {
        self.count("live_worker");
        self.inner.live_worker(id).await
    }

    async fn prune_workers(&self) -> Result<u64> {
        self.count("prune_workers");
        self.inner.prune_workers().await
    }
}

/// Webhooks: counted like the rest, so a poll that touched them would show.
#[async_trait]
impl WebhookStore for CountingStore {
    async fn create_webhook(&self, new: &NewWebhook) -> Result<Webhook> {
        self.count("create_webhook");
        self.inner.create_webhook(new).await
    }
    async fn get_webhook(&self, scope: Scope<'_>, uuid: Uuid) -> Result<Option<Webhook>> {
        self.count("get_webhook");
        self.inner.get_webhook(scope, uuid).await
    }
    async fn list_webhooks(&self, scope: Scope<'_>, limit: i64, offset: i64) -> Result<Page<Webhook>> {
        self.count("list_webhooks");
        self.inner.list_webhooks(scope, limit, offset).await
    }
    async fn save_webhook(&self, webhook: &Webhook) -> Result<bool> {
        self.count("save_webhook");
        self.inner.save_webhook(webhook).await
    }
    async fn delete_webhook(&self, uuid: Uuid) -> Result<bool> {
        self.count("delete_webhook");
        self.inner.delete_webhook(uuid).await
    }
    async fn webhook_deliveries(&self, webhook_id: i64, limit: i64, offset: i64) -> Result<Page<Delivery>> {
        self.count("webhook_deliveries");
        self.inner.webhook_deliveries(webhook_id, limit, offset).await
    }
    async fn webhook_targets(&self) -> Result<Vec<WebhookTarget>> {
        self.count("webhook_targets");
        self.inner.webhook_targets().await
    }
    async fn webhook_cursor(&self) -> Result<i64> {
        self.count("webhook_cursor");
        self.inner.webhook_cursor().await
    }
    async fn advance_webhook_cursor(&self, from: i64, to: i64, deliveries: &[NewDelivery]) -> Result<bool> {
        self.count("advance_webhook_cursor");
        self.inner.advance_webhook_cursor(from, to, deliveries).await
    }
    async fn claim_deliveries(&self, limit: i64, lease: Duration, skip: &[i64]) -> Result<Vec<DueDelivery>> {
        self.count("claim_deliveries");
        self.inner.claim_deliveries(limit, lease, skip).await
    }
    async fn record_attempt(&self, id: i64, attempt: i32, outcome: &Attempt) -> Result<bool> {
        self.count("record_attempt");
        self.inner.record_attempt(id, attempt, outcome).await
    }
    async fn prune_deliveries(&self, older_than: Duration) -> Result<u64> {
        self.count("prune_deliveries");
        self.inner.prune_deliveries(older_than).await
    }
}

struct App {
    router: axum::Router,
    store: Arc<CountingStore>,
    keys: HashMap<&'static str, String>,
}

impl App {
    async fn new() -> App {
        let inner = stevedore_store::connect("sqlite::memory:").await.unwrap();
        inner.migrate().await.unwrap();
        let mut keys = HashMap::new();
        for user in ["poller", "crowd"] {
            inner.create_user(user, &[]).await.unwrap();
            let key = generate_api_key();
            inner.add_api_key(user, &hash_api_key(&key)).await.unwrap();
            keys.insert(user, key);
        }
        let store = Arc::new(CountingStore {
            inner,
            calls: Mutex::default(),
        });
        let ops = FileConfig::parse(EXAMPLE_CONFIG).unwrap().operations().unwrap();
        let state = ApiState::new(
            Dispatcher::new(store.clone(), Arc::new(MemoryBroker::new())),
            Arc::new(ops),
        );
        App {
            router: router(state),
            store,
            keys,
        }
    }

    async fn send(&self, user: &str, method: &str, uri: &str, body: &str) -> (StatusCode, serde_json::Value) {
        let auth = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{user}:{}", self.keys[user])
            )
        );
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("Authorization", auth)
            .header("Content-Type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    /// The store calls a request made, credential lookups (and the
    /// revision check and use record that go with them) aside.
    async fn calls_of(&self, user: &str, uri: &str) -> (serde_json::Value, HashMap<&'static str, usize>) {
        self.store.take();
        let (status, json) = self.send(user, "GET", uri, "").await;
        assert_eq!(status, StatusCode::OK, "{uri}: {json}");
        let mut calls = self.store.take();
        for credential_call in ["credentials", "credential_revision", "record_key_use"] {
            calls.remove(credential_call);
        }
        (json, calls)
    }
}

#[tokio::test]
async fn an_event_poll_costs_two_store_calls_whatever_the_history() {
    let app = App::new().await;
    // The poller's few events come first: a service and an action on it.
    let (_, svc) = app
        .send("poller", "POST", "/api/app/v1/service/", r#"{"name":"web"}"#)
        .await;
    let svc = svc["uuid"].as_str().unwrap().to_string();
    let (status, _) = app
        .send("poller", "POST", &format!("/api/app/v1/service/{svc}/start/"), "")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Then thousands of someone else's.
    for i in 0..1200 {
        let (status, _) = app
            .send(
                "crowd",
                "POST",
                "/api/app/v1/service/",
                &format!(r#"{{"name":"s{i}"}}"#),
            )
            .await;
        assert!(status.is_success());
    }

    let (latest, calls) = app.calls_of("poller", "/api/v1/event").await;
    assert_eq!(
        calls,
        HashMap::from([("last_event_seq", 1), ("poll_events", 1)]),
        "the latest events cost two calls"
    );
    let messages: Vec<&str> = latest["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(messages.len() >= 3, "{messages:?}");
    assert!(
        messages.iter().any(|m| m.starts_with("action:poller:")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("service:all:")),
        "{messages:?}"
    );
    assert!(latest["offset"].as_i64().unwrap() > 2400, "{latest}");

    let (crowd, calls) = app.calls_of("crowd", "/api/v1/event?index=0").await;
    assert_eq!(calls, HashMap::from([("last_event_seq", 1), ("poll_events", 1)]));
    let messages = crowd["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 500, "a poll returns at most 500 events");
    assert!(messages
        .iter()
        .all(|m| m.as_str().unwrap().contains(":crowd:") || m.as_str().unwrap().contains(":all:")));
}

#[tokio::test]
async fn probes_share_one_readiness_check() {
    let app = App::new().await;
    app.store.take();
    let probes = (0..50).map(|_| {
        let router = app.router.clone();
        async move {
            let req = Request::builder().uri("/readyz").body(Body::empty()).unwrap();
            router.oneshot(req).await.unwrap().status()
        }
    });
    let statuses = futures::future::join_all(probes).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK), "{statuses:?}");
    let pings = app.store.take().get("ping").copied().unwrap_or(0);
    assert!(
        (1..=2).contains(&pings),
        "50 probes pinged the database {pings} times"
    );
    tokio::time::sleep(stevedore_api::routes::probes::READINESS_TTL + Duration::from_millis(50)).await;
    let req = Request::builder().uri("/readyz").body(Body::empty()).unwrap();
    assert_eq!(
        app.router.clone().oneshot(req).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        app.store.take().get("ping"),
        Some(&1),
        "a stale check is made again"
    );
}
