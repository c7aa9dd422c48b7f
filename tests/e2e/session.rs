//! The session cookie of `POST /api/v1/login` over real HTTP and websockets:
//! what it grants, what it refuses (wrong keys, other origins, other
//! tenants), and that a refused request changes nothing; and keys and
//! sessions taken back: `stevedore apikey ls` / `revoke` and logout, seen at
//! once by running API processes, cached credentials included.

use crate::support::deployment::{Backend, Deployment};
use crate::support::ws::ws_json;
use reqwest::header::{COOKIE, ORIGIN, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Logs in; returns the status and the `name=value` of the cookie set, if any.
async fn login(d: &Deployment, body: &str, content_type: &str) -> (StatusCode, Option<String>, String) {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/login", d.url))
        .header("Content-Type", content_type)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let cookie = resp
        .headers()
        .get(SET_COOKIE)
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string());
    (status, cookie, resp.text().await.unwrap())
}

/// A request carrying `cookie`, and `origin` when given.
async fn with_cookie(
    d: &Deployment,
    method: Method,
    path: &str,
    cookie: &str,
    origin: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{}", d.url, path))
        .header(COOKIE, cookie);
    if let Some(o) = origin {
        req = req.header(ORIGIN, o);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn the_session_cookie_authenticates_and_refuses_other_origins(d: &mut Deployment) {
    // Wrong key, malformed bodies: refused, and no cookie.
    let wrong = format!(r#"{{"user":"{}","apikey":"nope"}}"#, d.user);
    let (status, cookie, _) = login(d, &wrong, "application/json").await;
    assert_eq!((status, cookie), (StatusCode::UNAUTHORIZED, None));
    for body in ["", "{", r#"{"user":"a"}"#, r#"{"user":"a","apikey":"b","x":1}"#] {
        let (status, cookie, text) = login(d, body, "application/json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert!(cookie.is_none());
        assert!(serde_json::from_str::<Value>(&text).unwrap()["error"].is_string());
    }

    // Other body types, and logins from another origin, are refused.
    let right = format!(r#"{{"user":"{}","apikey":"{}"}}"#, d.user, d.key);
    let (status, cookie, _) = login(d, &right, "text/plain").await;
    assert_eq!((status, cookie), (StatusCode::UNSUPPORTED_MEDIA_TYPE, None));
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/login", d.url))
        .header("Content-Type", "application/json")
        .header(ORIGIN, "https://evil.example")
        .body(right.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(!resp.headers().contains_key(SET_COOKIE));

    // JSON and form logins both work.
    let form = format!("user={}&apikey={}", d.user, d.key);
    let (status, cookie, text) = login(d, &form, "application/x-www-form-urlencoded").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(cookie.is_some());
    let (status, cookie, text) = login(d, &right, "application/json").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let cookie = cookie.expect("a session cookie");
    assert!(cookie.starts_with("stevedore_session="));

    let (status, who) = with_cookie(d, Method::GET, "/api/v1/auth/", &cookie, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(who["user"], d.user.as_str());

    // A change from another origin is refused and changes nothing; from
    // our own origin (or from a non-browser, which sends none) it works.
    let svc = d.create_object("/api/app/v1/service/", "{}").await;
    let path = format!("/api/app/v1/service/{}/sleep/", svc["uuid"].as_str().unwrap());
    let (status, err) = with_cookie(d, Method::POST, &path, &cookie, Some("https://evil.example")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert!(err["error"].as_str().unwrap().contains("cross-origin"));
    let (_, _, list) = d
        .request(Method::GET, "/api/audit/v1/action/?object_type=service", None)
        .await;
    assert_eq!(list["meta"]["total_count"], 1, "only the create: {list}");
    let own = d.url.clone();
    let (status, action) = with_cookie(d, Method::POST, &path, &cookie, Some(&own)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{action}");
    let uuid = action["uuid"].as_str().unwrap().to_string();
    // Basic credentials a browser cached are no way around it either.
    let (status, _, err) = {
        let resp = reqwest::Client::new()
            .post(format!("{}{path}", d.url))
            .basic_auth(&d.user, Some(&d.key))
            .header(ORIGIN, "https://evil.example")
            .send()
            .await
            .unwrap();
        (resp.status(), (), resp.text().await.unwrap())
    };
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    let cancel = format!("/api/audit/v1/action/{uuid}/cancel/");
    let (status, _) = with_cookie(d, Method::POST, &cancel, &cookie, Some("null")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Another tenant's session does not see our action.
    let (other, other_key) = d.create_user("mallory").await;
    let body = format!(r#"{{"user":"{other}","apikey":"{other_key}"}}"#);
    let (_, other_cookie, _) = login(d, &body, "application/json").await;
    let other_cookie = other_cookie.unwrap();
    let (status, _) = with_cookie(
        d,
        Method::GET,
        &format!("/api/audit/v1/action/{uuid}/"),
        &other_cookie,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Websockets: the cookie works from the stream's own origin, not from another.
    let stream = d.stream_url().await;
    let ws = |origin: &str| {
        let mut req = format!("{}/api/audit/v1/events", stream.replacen("http://", "ws://", 1))
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("Cookie", cookie.parse().unwrap());
        req.headers_mut().insert("Origin", origin.parse().unwrap());
        req
    };
    match tokio_tungstenite::connect_async(ws("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403)
        }
        other => panic!("cross-origin websocket with the cookie: {:?}", other.map(|_| ())),
    }
    let (mut socket, _) = tokio_tungstenite::connect_async(ws(&stream))
        .await
        .expect("same-origin websocket");
    let auth = ws_json(&mut socket).await;
    assert_eq!(auth["type"], "auth", "{auth}");

    // Logging out clears the cookie.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/logout", d.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let cleared = resp.headers()[SET_COOKIE].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let (status, _) = with_cookie(d, Method::GET, "/api/v1/auth/", "stevedore_session=garbage", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Page scripts get no Basic challenge (no browser password prompt).
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/auth/", d.url))
        .header("X-Requested-With", "stevedore-dashboard")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Session realm=\"stevedore\"");
}

async fn the_dashboard_is_served_with_a_strict_policy(d: &mut Deployment) {
    let resp = reqwest::get(format!("{}/", d.url)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    let page = resp.text().await.unwrap();
    assert!(page.contains(r#"<script type="module" src="/ui/app.js">"#));
    for asset in ["/ui/app.js", "/ui/app.css", "/ui/icon.svg"] {
        let resp = reqwest::get(format!("{}{asset}", d.url)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{asset}");
        assert!(!resp.bytes().await.unwrap().is_empty());
    }
    let again = reqwest::Client::new()
        .get(format!("{}/", d.url))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let (status, _, err) = d.request_as(None, Method::GET, "/ui/nothing.js", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
}

/// `GET /api/v1/auth/` on `base`, with Basic `(user, key)` or a cookie.
async fn whoami(base: &str, basic: Option<(&str, &str)>, cookie: Option<&str>) -> StatusCode {
    let mut req = reqwest::Client::new().get(format!("{base}/api/v1/auth/"));
    if let Some((user, key)) = basic {
        req = req.basic_auth(user, Some(key));
    }
    if let Some(c) = cookie {
        req = req.header(COOKIE, c);
    }
    req.send().await.unwrap().status()
}

/// [`whoami`] until it is refused, for at most [`crate::support::deployment::SETTLE`]. Run with
/// a credential cache that outlives the test ([`LONG_CACHE`]), a refusal
/// can only come from the revocation reaching the process; the wait is for
/// its control message to be delivered, which is not synchronised with the
/// revoking command's exit.
async fn until_refused(base: &str, basic: Option<(&str, &str)>, cookie: Option<&str>) -> StatusCode {
    let deadline = tokio::time::Instant::now() + crate::support::deployment::SETTLE;
    loop {
        let status = whoami(base, basic, cookie).await;
        if status != StatusCode::OK || tokio::time::Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The URLs of the deployment's API process and (PostgreSQL + RabbitMQ) a
/// second one, each once it listens for revocations, so that what it
/// caches from now on is what a revocation must reach.
async fn api_processes(d: &mut Deployment) -> Vec<String> {
    let mut apis = vec![(d.url.clone(), "api")];
    if d.backend == Backend::PostgresRabbit {
        apis.push((d.start_api("api-2").await, "api-2"));
        for (_, name) in &apis {
            let deadline = tokio::time::Instant::now() + crate::support::deployment::SETTLE;
            while !d.logs(name).contains("subscribed to revocations") {
                assert!(tokio::time::Instant::now() < deadline, "{name}: {}", d.logs(name));
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
    apis.into_iter().map(|(url, _)| url).collect()
}

/// [`crate::support::deployment::TEST_CONFIG`] with a credential cache that outlives any test.
fn long_cache_config() -> String {
    format!(
        "{}\n[auth]\ncredential_cache_ttl = \"1h\"\n",
        crate::support::deployment::TEST_CONFIG
    )
}

/// Logs `user` in with `key`; the cookie's `name=value`.
async fn session_of(d: &Deployment, user: &str, key: &str) -> String {
    let body = format!(r#"{{"user":"{user}","apikey":"{key}"}}"#);
    let (status, cookie, text) = login(d, &body, "application/json").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    cookie.expect("a session cookie")
}

/// The rows of `stevedore apikey ls USER`: (id, fingerprint, last use).
async fn key_rows(d: &Deployment, user: &str) -> Vec<(i64, String, String)> {
    let (ok, out, err) = d.admin(&["apikey", "ls", user]).await;
    assert!(ok, "apikey ls: {err}");
    out.lines()
        .skip(1)
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0].parse().unwrap(), cols[1].to_string(), cols[5..].join(" "))
        })
        .collect()
}

/// The fingerprint `apikey ls` shows for `key`.
fn fingerprint(key: &str) -> String {
    stevedore_core::auth::hash_api_key(key)[..8].to_string()
}

async fn a_revoked_key_is_refused_at_once_even_while_cached(d: &mut Deployment) {
    let (user, old_key) = d.create_user("carol").await;
    let (ok, out, err) = d.admin(&["apikey", "create", &user]).await;
    assert!(ok, "{err}");
    let new_key = crate::support::deployment::exports(&out)["STEVEDORE_APIKEY"].clone();
    // The listing names keys by id and fingerprint, never the keys.
    let rows = key_rows(d, &user).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].1, fingerprint(&old_key));
    assert_eq!(rows[1].1, fingerprint(&new_key));
    let (ok, listing, _) = d.admin(&["apikey", "ls", &user]).await;
    assert!(ok && !listing.contains(&old_key) && !listing.contains(&new_key));
    let old_id = rows[0].0.to_string();

    // A second API process (PostgreSQL + RabbitMQ) caches credentials too.
    let apis = api_processes(d).await;
    // Used, so cached in every process; and a session made from each key.
    for api in &apis {
        assert_eq!(whoami(api, Some((&user, &old_key)), None).await, StatusCode::OK);
        assert_eq!(whoami(api, Some((&user, &new_key)), None).await, StatusCode::OK);
    }
    let old_cookie = session_of(d, &user, &old_key).await;
    let new_cookie = session_of(d, &user, &new_key).await;
    for api in &apis {
        assert_eq!(whoami(api, None, Some(&old_cookie)).await, StatusCode::OK);
    }
    // Its use is recorded (in the background, once a minute at most).
    let mut used = String::new();
    for _ in 0..100 {
        used = key_rows(d, &user).await[0].2.clone();
        if used != "never" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(used.ends_with("UTC"), "last use: {used}");

    let (ok, _, err) = d.admin(&["apikey", "revoke", &user, &old_id]).await;
    assert!(ok, "{err}");
    assert!(
        err.contains(&fingerprint(&old_key)) && err.contains("1 session ended"),
        "{err}"
    );

    // On every API process, although cached: the key and its session are
    // refused, the other key and its session still work. (`stevedore dev`
    // refuses the very next request; other processes, as soon as the
    // control message is delivered.)
    for api in &apis {
        let refused = if d.backend == Backend::Embedded {
            whoami(api, Some((&user, &old_key)), None).await
        } else {
            until_refused(api, Some((&user, &old_key)), None).await
        };
        assert_eq!(refused, StatusCode::UNAUTHORIZED, "{api}");
        assert_eq!(
            until_refused(api, None, Some(&old_cookie)).await,
            StatusCode::UNAUTHORIZED,
            "{api}"
        );
        assert_eq!(
            whoami(api, Some((&user, &new_key)), None).await,
            StatusCode::OK,
            "{api}"
        );
        assert_eq!(
            whoami(api, None, Some(&new_cookie)).await,
            StatusCode::OK,
            "{api}"
        );
    }
    // No new session can be made from it.
    let body = format!(r#"{{"user":"{user}","apikey":"{old_key}"}}"#);
    let (status, cookie, _) = login(d, &body, "application/json").await;
    assert_eq!((status, cookie), (StatusCode::UNAUTHORIZED, None));

    let rows = key_rows(d, &user).await;
    assert_eq!(
        rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
        vec![fingerprint(&new_key)]
    );
    // The system log records it, in the user's namespace.
    let (_, _, log) = d
        .request_as(
            Some((&user, &new_key)),
            Method::GET,
            "/api/v1/log?text=revoked",
            None,
        )
        .await;
    let text = log.to_string();
    assert!(
        text.contains(&format!(
            "API key {old_id} ({}) of {user} revoked",
            fingerprint(&old_key)
        )),
        "{text}"
    );

    // Clear errors: a key revoked twice, another user's key, an unknown user.
    let (ok, _, err) = d.admin(&["apikey", "revoke", &user, &old_id]).await;
    assert!(!ok && err.contains(&format!("no API key {old_id}")), "{err}");
    let (ok, _, err) = d.admin(&["apikey", "revoke", "nobody", "1"]).await;
    assert!(!ok && err.contains("no user named"), "{err}");
    let (ok, _, err) = d.admin(&["apikey", "ls", "nobody"]).await;
    assert!(!ok && err.contains("no user named"), "{err}");
    let (ok, _, err) = d.admin(&["apikey", "revoke", &user, "first"]).await;
    assert!(!ok && err.contains("KEY_ID"), "{err}");
}

async fn a_copied_cookie_stops_working_after_logout(d: &mut Deployment) {
    let cookie = session_of(d, &d.user.clone(), &d.key.clone()).await;
    // The cookie carries a session id: neither the key nor the user:key pair.
    let value = cookie.strip_prefix("stevedore_session=").unwrap();
    let pair = format!("{}:{}", d.user, d.key);
    use base64::Engine;
    for encoded in [
        base64::engine::general_purpose::STANDARD.encode(&pair),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&pair),
    ] {
        assert!(!value.contains(&encoded[..20]), "{value}");
    }
    assert!(!value.contains(&d.key) && !value.contains(&pair), "{value}");
    assert!(!value.contains(&d.key[..16]), "{value}");

    let apis = api_processes(d).await;
    // The copy works everywhere (and is cached everywhere) …
    for api in &apis {
        assert_eq!(whoami(api, None, Some(&cookie)).await, StatusCode::OK);
    }
    // … until the session is logged out on one process.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/logout", d.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    // The process that logged it out refuses it with the next request; the
    // others once the control message is delivered.
    assert_eq!(
        whoami(&d.url, None, Some(&cookie)).await,
        StatusCode::UNAUTHORIZED
    );
    for api in &apis {
        assert_eq!(
            until_refused(api, None, Some(&cookie)).await,
            StatusCode::UNAUTHORIZED,
            "{api}"
        );
    }
    // The key itself, and a new session, still work.
    assert_eq!(
        whoami(&d.url, Some((&d.user, &d.key)), None).await,
        StatusCode::OK
    );
    let again = session_of(d, &d.user.clone(), &d.key.clone()).await;
    assert_ne!(again, cookie);
    assert_eq!(whoami(&d.url, None, Some(&again)).await, StatusCode::OK);
}

on_both_backends!(
    the_session_cookie_authenticates_and_refuses_other_origins,
    the_dashboard_is_served_with_a_strict_policy,
);

/// The revocation cases, on both backends, with a credential cache that
/// outlives the test: whatever refuses a cached credential is the revocation.
mod revocations {
    use super::*;

    async fn deployment(backend: Backend) -> Deployment {
        Deployment::start_with(backend, &long_cache_config()).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_a_revoked_key_is_refused_at_once_even_while_cached() {
        a_revoked_key_is_refused_at_once_even_while_cached(&mut deployment(Backend::Embedded).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_rabbitmq_a_revoked_key_is_refused_at_once_even_while_cached() {
        let mut d = deployment(Backend::PostgresRabbit).await;
        a_revoked_key_is_refused_at_once_even_while_cached(&mut d).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_a_copied_cookie_stops_working_after_logout() {
        a_copied_cookie_stops_working_after_logout(&mut deployment(Backend::Embedded).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_rabbitmq_a_copied_cookie_stops_working_after_logout() {
        let mut d = deployment(Backend::PostgresRabbit).await;
        a_copied_cookie_stops_working_after_logout(&mut d).await;
    }
}

/// Sessions end at `[auth] session_ttl`, whatever the cookie says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_at_its_expiry() {
    let config = format!(
        "{}\n[auth]\nsession_ttl = \"2s\"\n",
        crate::support::deployment::TEST_CONFIG
    );
    let d = Deployment::start_with(Backend::Embedded, &config).await;
    let cookie = session_of(&d, &d.user, &d.key).await;
    assert_eq!(whoami(&d.url, None, Some(&cookie)).await, StatusCode::OK);
    let mut status = StatusCode::OK;
    for _ in 0..100 {
        status = whoami(&d.url, None, Some(&cookie)).await;
        if status != StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        whoami(&d.url, Some((&d.user, &d.key)), None).await,
        StatusCode::OK
    );
}
