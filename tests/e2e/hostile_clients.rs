//! Hostile and careless clients, end to end through the real binary on both
//! backends: browsers on other sites cannot ride a user's credentials, and
//! a flood of wrong keys is throttled without flooding the system log.

use crate::support::deployment::{bin, Backend, Deployment, TEST_CONFIG};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A POST creating a service, with Basic credentials and `origin` if given.
async fn create_from(d: &Deployment, origin: Option<&str>, auth: &str) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/api/app/v1/service/", d.url))
        .header("Content-Type", "application/json")
        .header("Authorization", auth)
        .body(r#"{"name":"web"}"#);
    if let Some(o) = origin {
        req = req.header("Origin", o);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The status of a websocket handshake to the events stream at `base`,
/// with Basic credentials and `origin` if given (101 when it upgraded).
async fn events_handshake(base: &str, user: &str, key: &str, origin: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/api/audit/v1/events", base.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request().unwrap();
    let basic = stevedore_core::auth::basic_authorization(user, key);
    req.headers_mut().insert("Authorization", basic.parse().unwrap());
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("websocket handshake failed: {e}"),
    }
}

async fn other_origins_cannot_change_things_or_open_websockets(d: &mut Deployment) {
    let basic = stevedore_core::auth::basic_authorization(&d.user, &d.key);
    let api_key = format!("ApiKey {}:{}", d.user, d.key);
    let own = d.url.clone();
    for auth in [&basic, &api_key] {
        let (status, json) = create_from(d, Some("https://evil.example"), auth).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{json}");
        assert!(json["error"].as_str().unwrap().contains("cross-origin"), "{json}");
        let (status, json) = create_from(d, Some("null"), auth).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{json}");
    }
    // Nothing was created by the refused requests.
    let (_, _, list) = d.request(Method::GET, "/api/app/v1/service/", None).await;
    assert_eq!(list["meta"]["total_count"], 0, "{list}");
    // SDKs and CLIs send no Origin; the dashboard sends the API's own.
    let (status, json) = create_from(d, None, &basic).await;
    assert!(status.is_success(), "{json}");
    let (status, json) = create_from(d, Some(&own), &basic).await;
    assert!(status.is_success(), "{json}");
    // A refused change is refused before credentials are even looked at.
    let (status, _) = create_from(d, Some("https://evil.example"), "Basic bm8=").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let stream = d.stream_url().await;
    let (user, key) = (d.user.clone(), d.key.clone());
    assert_eq!(
        events_handshake(&stream, &user, &key, Some("https://evil.example")).await,
        403
    );
    assert_eq!(events_handshake(&stream, &user, &key, None).await, 101);
    assert_eq!(events_handshake(&stream, &user, &key, Some(&stream)).await, 101);
    // The same port on another host name is another origin.
    let other_host = stream.replace("127.0.0.1", "localhost");
    assert_eq!(
        events_handshake(&stream, &user, &key, Some(&other_host)).await,
        403
    );
}

/// `allowed_origins` in the config file lets a named origin act too.
mod allowed_origins {
    use super::*;

    async fn a_listed_origin_may_act(backend: Backend) {
        let config = format!("allowed_origins = [\"https://dash.example.com\"]\n{TEST_CONFIG}");
        let mut d = Deployment::start_with(backend, &config).await;
        let basic = stevedore_core::auth::basic_authorization(&d.user, &d.key);
        let (status, json) = create_from(&d, Some("https://dash.example.com"), &basic).await;
        assert!(status.is_success(), "{json}");
        let (status, _) = create_from(&d, Some("http://dash.example.com"), &basic).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "another scheme is another origin");
        let stream = d.stream_url().await;
        let (user, key) = (d.user.clone(), d.key.clone());
        assert_eq!(
            events_handshake(&stream, &user, &key, Some("https://dash.example.com")).await,
            101
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        a_listed_origin_may_act(Backend::Embedded).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_rabbitmq() {
        a_listed_origin_may_act(Backend::PostgresRabbit).await;
    }
}

async fn a_flood_of_wrong_keys_is_throttled_and_logged_once_per_window(d: &mut Deployment) {
    use stevedore_core::store::Scope;
    use stevedore_core::syslog::SystemLogFilter;
    let (victim, key) = d.create_user("victim").await;
    let store = d.store().await;
    let auth_entries = || async {
        let filter = SystemLogFilter {
            category: Some("auth".into()),
            ..Default::default()
        };
        store.system_log(Scope::All, &filter, 1000, 0).await.unwrap()
    };
    let before = auth_entries().await.len();
    let http = reqwest::Client::new();
    let (mut unauthorized, mut throttled) = (0, 0);
    for i in 0..400 {
        let resp = http
            .get(format!("{}/api/audit/v1/action/", d.url))
            .basic_auth(&victim, Some(format!("wrong-{i}")))
            .send()
            .await
            .unwrap();
        match resp.status() {
            StatusCode::UNAUTHORIZED => unauthorized += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                throttled += 1;
                let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=60).contains(&retry), "Retry-After: {retry}");
                let json: Value = resp.json().await.unwrap();
                assert!(json["error"].as_str().unwrap().contains("too many"), "{json}");
            }
            other => panic!("wrong key {i}: {other}"),
        }
    }
    // The default limit is 10 failures a minute per user name (one more
    // refills every 6 s, should the run be slow).
    assert!(
        (10..=20).contains(&unauthorized),
        "{unauthorized} 401s, {throttled} 429s"
    );
    assert_eq!(unauthorized + throttled, 400);
    // While blocked, even the right key is not checked: a correct guess
    // looks like every other attempt.
    let (status, _, _) = d
        .request_as(Some((&victim, &key)), Method::GET, "/api/audit/v1/action/", None)
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let entries = auth_entries().await;
    let written = entries.len() - before;
    assert!(
        written <= 4,
        "{written} system log entries for 401 attempts: {entries:?}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e.message == "authentication failed: invalid credentials" && e.user == "victim"),
        "{entries:?}"
    );
    // Requests without credentials are not failures and are not limited.
    let (status, _, _) = d
        .request_as(None, Method::GET, "/api/audit/v1/action/", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

on_both_backends!(
    other_origins_cannot_change_things_or_open_websockets,
    a_flood_of_wrong_keys_is_throttled_and_logged_once_per_window,
);

/// Edge settings that cannot be right stop the process at start-up, naming
/// the entry, whether they come from the environment or the file.
#[tokio::test]
async fn bad_proxy_and_origin_settings_are_start_up_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("stevedore.toml");
    let run = |envs: Vec<(&'static str, &'static str)>, file: &'static str| {
        std::fs::write(&config, file).unwrap();
        let out = std::process::Command::new(bin())
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .arg("--config")
            .arg(&config)
            .env_remove("STEVEDORE_DATABASE_URL")
            .envs(envs)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{file} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(vec![("STEVEDORE_TRUSTED_PROXIES", "10.0.0.0/8,10.0.0.0/33")], "");
    assert!(err.contains("10.0.0.0/33"), "{err}");
    let err = run(vec![("STEVEDORE_ALLOWED_ORIGINS", "dash.example.com")], "");
    assert!(err.contains("dash.example.com"), "{err}");
    let err = run(
        vec![],
        "trust_forwarded_for = true\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    assert!(err.contains("trusted_proxies"), "{err}");
}
