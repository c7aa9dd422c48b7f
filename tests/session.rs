//! The session cookie of `POST /api/v1/login` over real HTTP and websockets:
//! what it grants, what it refuses (wrong keys, other origins, other
//! tenants), and that a refused request changes nothing.

mod common;

use common::{ws_json, Deployment};
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

on_both_backends!(
    the_session_cookie_authenticates_and_refuses_other_origins,
    the_dashboard_is_served_with_a_strict_policy,
);
