//! Property tests: whatever a client sends to the list filters, the
//! operation bodies and the paths, the API answers 2xx or a 4xx with a JSON
//! error — never a 5xx, never a panic — and a refused request records nothing.
//!
//! The router runs in process on the in-process broker and an in-memory
//! SQLite store, so thousands of cases take seconds; the properties about
//! numbers, dates, NUL bytes and uuid spelling (`mod hostile`) also run on
//! PostgreSQL, where the database itself refuses what SQLite stores.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use std::sync::Arc;
use stevedore_api::{router, ApiState};
use stevedore_broker::memory::MemoryBroker;
use stevedore_core::auth::{generate_api_key, hash_api_key};
use stevedore_core::config::{FileConfig, EXAMPLE_CONFIG};
use stevedore_core::dispatch::Dispatcher;
use stevedore_core::shutdown::Shutdown;
use stevedore_core::store::Scope;
use stevedore_core::testing::TestDatabase;
use tower::ServiceExt;

struct App {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    auth: String,
    service: String,
    action: String,
    store: stevedore_core::store::DynStore,
    /// The PostgreSQL database, dropped after the store's pool.
    _db: Option<TestDatabase>,
}

/// The store an [`App`] runs on.
#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

impl App {
    fn new() -> App {
        App::on(Backend::Sqlite)
    }

    fn on(backend: Backend) -> App {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let db = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(rt.block_on(TestDatabase::create())),
        };
        let url = db.as_ref().map_or("sqlite::memory:", |d| d.url()).to_string();
        let (router, auth, store) = rt.block_on(async {
            let store = stevedore_store::connect(&url).await.unwrap();
            store.migrate().await.unwrap();
            store.create_user("fuzz", &[]).await.unwrap();
            let key = generate_api_key();
            store.add_api_key("fuzz", &hash_api_key(&key)).await.unwrap();
            let ops = FileConfig::parse(EXAMPLE_CONFIG).unwrap().operations().unwrap();
            let state = ApiState::new(
                Dispatcher::new(store.clone(), Arc::new(MemoryBroker::new())),
                Arc::new(ops),
            );
            // Long-polls are woken by the hub, as in the real roles.
            state
                .hub
                .spawn_subscriber(state.dispatcher.broker().clone(), Shutdown::new());
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
            _db: db,
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

    /// Starts a GET on the app's runtime; the handle answers status and JSON.
    fn spawn_get(&self, uri: &str) -> tokio::task::JoinHandle<(StatusCode, serde_json::Value)> {
        let req = Request::builder()
            .method("GET")
            .uri(uri)
            .header("Authorization", &self.auth)
            .body(Body::empty())
            .unwrap();
        let router = self.router.clone();
        self.rt.spawn(async move {
            let resp = router.oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
            (status, serde_json::from_slice(&bytes).unwrap())
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

/// Hostile numbers, dates, strings and uuid spellings: each property and
/// case runs on SQLite and on PostgreSQL (one database per test).
mod hostile {
    use super::*;
    use proptest::test_runner::{Config, TestRunner};

    /// One `#[test]` per store for each `fn name(app: &App)`.
    macro_rules! on_both_stores {
        ($($name:ident),* $(,)?) => {
            mod sqlite {
                $(#[test] fn $name() { super::$name(&super::App::on(super::Backend::Sqlite)); })*
            }
            mod postgres {
                $(#[test] fn $name() { super::$name(&super::App::on(super::Backend::Postgres)); })*
            }
        };
    }

    on_both_stores!(
        hostile_query_values_get_an_answer_or_a_json_400,
        hostile_bodies_are_refused_before_the_store,
        the_reported_inputs_are_400s_naming_their_parameter,
        uppercase_uuids_address_the_same_things_as_lowercase,
    );

    /// Numbers at and past every boundary, in every spelling.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|n| n.to_string()),
            prop::sample::select(
                &[
                    "9223372036854775807",
                    "9223372036854775808",
                    "-9223372036854775808",
                    "1e20",
                    "1e308",
                    "1e400",
                    "NaN",
                    "inf",
                    "-0",
                    "0x10",
                    "10000000000000",
                    "253402300799",
                    "253402300800",
                    "",
                ][..]
            )
            .prop_map(String::from),
            "[0-9]{1,30}",
        ]
    }

    /// Dates inside and outside what the stores hold.
    fn date() -> impl Strategy<Value = String> {
        prop_oneof![
            number(),
            (-300_000i64..300_000).prop_map(|y| format!("{y:+05}-01-01T00:00:00Z")),
            (0i64..99_999).prop_map(|y| format!("{y:04}-12-31")),
            Just("Fri, 31 Dec 9999 23:59:59 +0000".to_string()),
        ]
    }

    /// Strings with NUL bytes and other control characters among ordinary text.
    fn nul_string() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]{0,4}\u{0}[a-z]{0,4}",
            any::<String>(),
            "[\u{0}-\u{1f}]{1,4}",
        ]
    }

    /// A request path and query with one hostile value in it.
    fn hostile_request(app: &App) -> impl Strategy<Value = String> {
        let action = app.action.clone();
        let upper = app.action.to_ascii_uppercase();
        let list = (prop::sample::select(&["limit", "offset"][..]), number())
            .prop_map(|(k, v)| format!("/api/audit/v1/action/?{}", pair(k, &v)));
        let dates = (
            prop::sample::select(
                &[
                    "start_date__gte",
                    "start_date__lte",
                    "end_date__gte",
                    "end_date__lte",
                ][..],
            ),
            date(),
        )
            .prop_map(|(k, v)| format!("/api/audit/v1/action/?{}", pair(k, &v)));
        let log = (
            prop::sample::select(&["time_start", "time_end", "limit", "offset"][..]),
            number(),
        )
            .prop_map(|(k, v)| format!("/api/v1/log?{}", pair(k, &v)));
        let texts = (
            prop::sample::select(&["user", "category", "text", "level"][..]),
            nul_string(),
        )
            .prop_map(|(k, v)| format!("/api/v1/log?{}", pair(k, &v)));
        let filters = (
            prop::sample::select(&["uuid", "uuid__startswith", "object", "state", "object_type"][..]),
            prop_oneof![
                nul_string(),
                Just(upper.clone()),
                Just(upper.clone()[..9].to_string())
            ],
        )
            .prop_map(|(k, v)| format!("/api/audit/v1/action/?{}", pair(k, &v)));
        let events = number().prop_map(|v| format!("/api/v1/event?{}", pair("index", &v)));
        // The wait names the action's current state, so it answers at once
        // whatever the duration.
        let (_, current) = app.send("GET", &format!("/api/audit/v1/action/{action}/"), vec![]);
        let current = current["state"].as_str().unwrap().replace(' ', "%20");
        let wait = (number(), any::<bool>()).prop_map(move |(v, up)| {
            let id = if up {
                action.to_ascii_uppercase()
            } else {
                action.clone()
            };
            format!(
                "/api/v1/event/wait/action/{id}/{current}?{}",
                pair("duration", &v)
            )
        });
        prop_oneof![list, dates, log, texts, filters, events, wait]
    }

    fn pair(k: &str, v: &str) -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair(k, v)
            .finish()
    }

    fn hostile_query_values_get_an_answer_or_a_json_400(app: &App) {
        let mut runner = TestRunner::new(Config {
            cases: 150,
            ..Config::default()
        });
        runner
            .run(&hostile_request(app), |uri| {
                let (status, json) = app.send("GET", &uri, vec![]);
                if status != StatusCode::OK {
                    assert_clean_refusal(status, &json, &uri);
                }
                prop_assert!(
                    status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
                    "{} {} {}",
                    uri,
                    status,
                    json
                );
                if status == StatusCode::OK {
                    if let Some(next) = json["meta"]["next"].as_str() {
                        prop_assert!(!next.contains("offset=-"), "{}: {}", uri, next);
                    }
                }
                Ok(())
            })
            .unwrap();
    }

    fn hostile_bodies_are_refused_before_the_store(app: &App) {
        let mut runner = TestRunner::new(Config {
            cases: 60,
            ..Config::default()
        });
        let field = prop::sample::select(&["name", "image", "env"][..]);
        runner
            .run(&(field, nul_string()), |(field, value)| {
                let body = serde_json::json!({ field: value, "tags": [value] });
                let before = app.action_events();
                let (status, json) = app.send("POST", "/api/app/v1/service/", body.to_string().into_bytes());
                assert_clean_refusal(status, &json, &format!("{body}"));
                if value.contains('\0') {
                    prop_assert_eq!(status, StatusCode::BAD_REQUEST, "{}", json);
                    let error = json["error"].as_str().unwrap_or_default();
                    prop_assert!(error.contains("NUL"), "{}", error);
                    prop_assert_eq!(app.action_events(), before, "a refused body recorded an action");
                }
                let (status, json) = app.send(
                    "PATCH",
                    &format!("/api/app/v1/service/{}/", app.service),
                    body.to_string().into_bytes(),
                );
                assert_clean_refusal(status, &json, &format!("patch {body}"));
                Ok(())
            })
            .unwrap();
    }

    fn the_reported_inputs_are_400s_naming_their_parameter(app: &App) {
        let (status, json) = app.send(
            "GET",
            &format!(
                "/api/v1/event/wait/action/{}/In%20progress?duration=1e20",
                app.action
            ),
            vec![],
        );
        assert_eq!(status, StatusCode::OK, "duration=1e20: {json}");
        for (uri, param) in [
            ("/api/audit/v1/action/?offset=9223372036854775807", "offset"),
            ("/api/audit/v1/action/?limit=9223372036854775808", "limit"),
            ("/api/v1/log?time_start=10000000000000", "time_start"),
            ("/api/v1/log?time_end=-1", "time_end"),
            ("/api/v1/log?offset=9223372036854775807", "offset"),
            ("/api/v1/log?text=a%00b", "text"),
            ("/api/v1/log?user=%00", "user"),
            ("/api/v1/event?index=-1", "index"),
            (
                "/api/audit/v1/action/?start_date__gte=10000000000000",
                "start_date__gte",
            ),
            (
                "/api/audit/v1/action/?end_date__lte=-0001-01-01T00:00:00Z",
                "end_date__lte",
            ),
            ("/api/audit/v1/action/?object=%00", "object"),
            (
                "/api/v1/event/wait/action/00000000-0000-0000-0000-000000000000/Success?duration=-1",
                "duration",
            ),
        ] {
            let (status, json) = app.send("GET", uri, vec![]);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {json}");
            let error = json["error"].as_str().unwrap();
            assert!(error.starts_with(param), "{uri}: {error}");
        }
        let (status, json) = app.send(
            "POST",
            "/api/app/v1/service/",
            br#"{"name":"web\u0000"}"#.to_vec(),
        );
        assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
        assert_eq!(json["error"], "name must not contain a NUL byte");
        // The largest offset accepted answers an empty page without overflow.
        let (status, json) = app.send(
            "GET",
            "/api/audit/v1/action/?offset=1000000000&limit=1000",
            vec![],
        );
        assert_eq!(status, StatusCode::OK, "{json}");
        assert!(json["meta"]["next"].is_null(), "{json}");
    }

    fn uppercase_uuids_address_the_same_things_as_lowercase(app: &App) {
        let (lower, upper) = (app.action.clone(), app.action.to_ascii_uppercase());
        assert_ne!(lower, upper);
        let (status, by_lower) = app.send("GET", &format!("/api/audit/v1/action/{lower}/"), vec![]);
        assert_eq!(status, StatusCode::OK);
        let (status, by_upper) = app.send("GET", &format!("/api/audit/v1/action/{upper}/"), vec![]);
        assert_eq!(status, StatusCode::OK, "{by_upper}");
        assert_eq!(
            by_upper["uuid"],
            lower.as_str(),
            "answers carry the canonical spelling"
        );
        assert_eq!(by_upper["resource_uri"], by_lower["resource_uri"]);
        for filter in [
            format!("uuid={upper}"),
            format!("uuid__startswith={}", &upper[..8]),
            format!("object={}", app.service.to_ascii_uppercase()),
            format!("object=/api/app/v1/service/{}/", app.service.to_ascii_uppercase()),
        ] {
            let (status, json) = app.send("GET", &format!("/api/audit/v1/action/?{filter}"), vec![]);
            assert_eq!(status, StatusCode::OK, "{filter}: {json}");
            let uuids: Vec<&str> = json["objects"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|a| a["uuid"].as_str())
                .collect();
            assert!(uuids.contains(&lower.as_str()), "{filter}: {uuids:?}");
        }
        let svc = app.service.to_ascii_uppercase();
        let (status, json) = app.send("GET", &format!("/api/app/v1/service/{svc}/"), vec![]);
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["uuid"], app.service.as_str());
        let (status, json) = app.send(
            "GET",
            &format!("/api/v1/event/wait/action/{upper}/in%20progress?duration=0"),
            vec![],
        );
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["uuid"], lower.as_str());
        // A waiter that spelled the uuid in capitals is woken by the
        // action's event like any other (not by its deadline).
        let waiter = app.spawn_get(&format!(
            "/api/v1/event/wait/action/{upper}/Canceling?duration=300"
        ));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let (status, json) = app.send("POST", &format!("/api/audit/v1/action/{upper}/cancel/"), vec![]);
        assert_eq!(status, StatusCode::ACCEPTED, "{json}");
        let woken = app
            .rt
            .block_on(async { tokio::time::timeout(std::time::Duration::from_secs(60), waiter).await });
        let (status, json) = woken.expect("the waiter was not woken").unwrap();
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["state"], "Canceling");
    }
}

/// Webhook bodies: whatever a client sends to create or change a webhook is
/// taken (201/200) or refused with a JSON 4xx, and a refused one stores nothing.
mod webhooks {
    use super::*;

    fn field() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let text = prop_oneof![
            any::<String>(),
            Just("https://hooks.example.com/in".to_string()),
            Just("http://127.0.0.1:1/".to_string()),
            Just("ftp://x/".to_string()),
            Just("Success".to_string()),
            Just("In progress".to_string()),
            Just("service".to_string()),
            Just("start".to_string()),
            Just("fuzz".to_string()),
        ];
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            text.clone().prop_map(Value::from),
            prop::collection::vec(text, 0..4).prop_map(Value::from),
        ]
    }

    fn webhook_body() -> impl Strategy<Value = Vec<u8>> {
        let keys = prop_oneof![
            prop::sample::select(&["url", "states", "object_type", "action", "namespace", "secret"][..])
                .prop_map(String::from),
            any::<String>(),
        ];
        prop_oneof![
            prop::collection::hash_map(keys, field(), 0..5).prop_map(|m| serde_json::to_vec(&m).unwrap()),
            body(),
        ]
    }

    fn webhooks(a: &App) -> i64 {
        a.rt.block_on(a.store.list_webhooks(Scope::All, 1, 0))
            .unwrap()
            .total
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn any_webhook_body_is_taken_or_refused_without_a_trace(b in webhook_body()) {
            let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
            let a = app();
            let before = webhooks(a);
            let (status, json) = a.send("POST", "/api/v1/webhook/", b.clone());
            assert_clean_refusal(status, &json, &String::from_utf8_lossy(&b));
            let after = webhooks(a);
            if status.is_success() {
                prop_assert_eq!(status, StatusCode::CREATED);
                prop_assert_eq!(after, before + 1);
                let uri = json["resource_uri"].as_str().unwrap().to_string();
                let (status, changed) = a.send("PATCH", &uri, b);
                assert_clean_refusal(status, &changed, "patch");
                let uuid = json["uuid"].as_str().unwrap().parse().unwrap();
                prop_assert!(a.rt.block_on(a.store.delete_webhook(uuid)).unwrap());
            } else {
                prop_assert_eq!(after, before, "a refused request stored a webhook");
            }
        }
    }
}
