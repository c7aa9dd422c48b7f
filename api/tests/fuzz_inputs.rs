//! Property tests: whatever a client sends to the list filters, the
//! operation bodies and the paths, the API answers 2xx or a 4xx with a JSON
//! error — never a 5xx, never a panic — and a refused request records nothing.
//!
//! The router runs in process on an in-memory SQLite store and the
//! in-process broker, so thousands of cases take seconds.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use std::sync::Arc;
use stevedore_api::{router, ApiState};
use stevedore_shared::auth::{generate_api_key, hash_api_key};
use stevedore_shared::broker::memory::MemoryBroker;
use stevedore_shared::config::{FileConfig, EXAMPLE_CONFIG};
use stevedore_shared::dispatch::Dispatcher;
use stevedore_shared::store::{self, Scope};
use tower::ServiceExt;

struct App {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    auth: String,
    service: String,
    action: String,
    store: store::DynStore,
}

impl App {
    fn new() -> App {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (router, auth, store) = rt.block_on(async {
            let store = store::connect("sqlite::memory:").await.unwrap();
            store.migrate().await.unwrap();
            store.create_user("fuzz", &[]).await.unwrap();
            let key = generate_api_key();
            store.add_api_key("fuzz", &hash_api_key(&key)).await.unwrap();
            let ops = FileConfig::parse(EXAMPLE_CONFIG).unwrap().operations().unwrap();
            let state = ApiState {
                trust_forwarded_for: false,
                geoip: None,
                ..ApiState::new(
                    Dispatcher::new(store.clone(), Arc::new(MemoryBroker::new())),
                    Arc::new(ops),
                )
            };
            let auth = format!(
                "Basic {}",
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("fuzz:{key}"))
            );
            (router(state), auth, store)
        });
        let mut app = App {
            rt,
            router,
            auth,
            service: String::new(),
            action: String::new(),
            store,
        };
        let (_, svc) = app.send(
            "POST",
            "/api/app/v1/service/",
            r#"{"name":"fuzz"}"#.as_bytes().to_vec(),
        );
        app.service = svc["uuid"].as_str().unwrap().to_string();
        let (_, a) = app.send(
            "POST",
            &format!("/api/app/v1/service/{}/stop/", app.service),
            vec![],
        );
        app.action = a["uuid"].as_str().unwrap().to_string();
        app
    }

    fn send(&self, method: &str, uri: &str, body: Vec<u8>) -> (StatusCode, serde_json::Value) {
        self.rt.block_on(async {
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .header("Authorization", &self.auth)
                .header("Content-Type", "application/json")
                .body(Body::from(body))
                .unwrap();
            let resp = self.router.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
            let json = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{method} {uri}: {status} body is not JSON ({e}): {bytes:?}"));
            (status, json)
        })
    }

    /// `POST /api/v1/login` with `body` as JSON or as a form; a refusal sets no cookie.
    fn send_login(&self, body: Vec<u8>, form: bool) -> (StatusCode, serde_json::Value) {
        self.rt.block_on(async {
            let content_type = if form {
                "application/x-www-form-urlencoded"
            } else {
                "application/json"
            };
            let req = Request::builder()
                .method("POST")
                .uri("/api/v1/login")
                .header("Content-Type", content_type)
                .body(Body::from(body))
                .unwrap();
            let resp = self.router.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            assert!(
                status.is_success() || !resp.headers().contains_key("set-cookie"),
                "a refused login set a cookie"
            );
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
            let json = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("login: {status} body is not JSON ({e}): {bytes:?}"));
            (status, json)
        })
    }

    fn action_events(&self) -> usize {
        self.rt.block_on(async {
            self.store
                .events_after(Scope::All, 0, 1_000_000)
                .await
                .unwrap()
                .iter()
                .filter(|e| e.object_type == "action")
                .count()
        })
    }
}

/// The properties share one app; this keeps their cases from interleaving,
/// so "nothing was recorded" is measured against this case alone.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn app() -> &'static App {
    static APP: std::sync::OnceLock<App> = std::sync::OnceLock::new();
    APP.get_or_init(App::new)
}

fn assert_clean_refusal(status: StatusCode, json: &serde_json::Value, what: &str) {
    assert!(!status.is_server_error(), "{what}: {status} {json}");
    if status.is_client_error() {
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {json}"
        );
    } else {
        assert!(json.is_object(), "{what}: {json}");
    }
}

const KEYS: &[&str] = &[
    "uuid",
    "uuid__startswith",
    "state",
    "start_date__gte",
    "start_date__lte",
    "end_date__gte",
    "end_date__lte",
    "object",
    "include_related",
    "limit",
    "offset",
    "format",
    "bogus",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9a-f-]{0,40}",
        "-?[0-9]{1,20}",
        Just("In progress".to_string()),
        Just("Wed, 17 Sep 2014 08:26:22 +0000".to_string()),
        Just("2014-09-17T08:26:22Z".to_string()),
        Just("/api/app/v1/service/6246c558-976c-4df6-ba60-eb1a344a17af/".to_string()),
        Just("true".to_string()),
    ]
}

fn query() -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(KEYS), value()), 0..5).prop_map(|pairs| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k, &v);
        }
        s.finish()
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let json = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    let object = prop::collection::hash_map(
        prop_oneof![
            any::<String>(),
            prop::sample::select(&["name", "stack", "uuid", "seconds", "state"][..]).prop_map(String::from)
        ],
        json,
        0..4,
    )
    .prop_map(|m| serde_json::to_vec(&m).unwrap());
    prop_oneof![
        object,
        prop::collection::vec(any::<u8>(), 0..64),
        any::<String>().prop_map(String::into_bytes)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_list_query_gets_a_list_or_a_json_400(q in query()) {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (status, json) = app().send("GET", &format!("/api/audit/v1/action/?{q}"), vec![]);
        assert_clean_refusal(status, &json, &q);
        prop_assert!(status == StatusCode::OK || status == StatusCode::BAD_REQUEST, "{} {}", status, q);
        if status == StatusCode::OK {
            prop_assert!(json["meta"]["limit"].as_i64().unwrap() > 0);
            prop_assert!(json["objects"].is_array());
        }
    }

    #[test]
    fn any_body_either_records_one_action_or_nothing(b in body(), verb in prop::sample::select(&["start", "scale", "explode"][..])) {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let a = app();
        let before = a.action_events();
        let (status, json) = a.send("POST", &format!("/api/app/v1/service/{}/{verb}/", a.service), b.clone());
        assert_clean_refusal(status, &json, &format!("{verb} {:?}", String::from_utf8_lossy(&b)));
        let after = a.action_events();
        if status.is_success() {
            prop_assert_eq!(status, StatusCode::ACCEPTED);
            prop_assert!(after > before);
        } else {
            prop_assert_eq!(after, before, "a refused request recorded an action");
        }
    }

    #[test]
    fn any_create_or_patch_body_is_taken_or_refused_cleanly(b in body()) {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let a = app();
        let (status, json) = a.send("POST", "/api/app/v1/container/", b.clone());
        assert_clean_refusal(status, &json, "create");
        let (status, json) = a.send("PATCH", &format!("/api/app/v1/service/{}/", a.service), b);
        assert_clean_refusal(status, &json, "patch");
    }

    #[test]
    fn any_login_body_is_refused_cleanly(b in body(), form in any::<bool>()) {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let a = app();
        let (status, json) = a.send_login(b, form);
        assert_clean_refusal(status, &json, "login");
        prop_assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::UNAUTHORIZED,
            "{} {}", status, json
        );
    }

    #[test]
    fn any_path_is_answered_without_a_server_error(
        segs in prop::collection::vec(prop_oneof!["[a-z0-9_.%-]{0,12}", Just("action".to_string()), Just("service".to_string())], 0..6),
        prefix in prop::sample::select(&["/api/audit/v1/", "/api/v1/", "/api/app/v1/", "/api/infra/v1/", "/"][..]),
        method in prop::sample::select(&["GET", "POST", "PATCH", "DELETE", "PUT"][..]),
    ) {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let a = app();
        let mut segs = segs;
        if segs.len() > 1 {
            segs[1] = a.action.clone();
        }
        let uri = format!("{prefix}{}/", segs.join("/"));
        if uri.parse::<axum::http::Uri>().is_ok() {
            let (status, json) = a.send(method, &uri, vec![]);
            assert_clean_refusal(status, &json, &format!("{method} {uri}"));
        }
    }
}
