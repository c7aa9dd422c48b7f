//! The QNAP-compatible system log and event polling API, through the real
//! binary on both backends.

use crate::support::deployment::Deployment;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::HashSet;
use std::time::{Duration, Instant};

async fn get_json(d: &Deployment, path: &str) -> Value {
    let (status, _, json) = d.request(Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK, "{path}: {json}");
    json
}

async fn run_noop(d: &Deployment, svc: &Value, verb: &str) -> String {
    let uuid = d.submit(svc["uuid"].as_str().unwrap(), verb, None).await;
    d.wait_for_state(&uuid, &["Success", "Failed", "Canceled"]).await;
    uuid
}

async fn every_state_change_and_object_change_is_logged_and_filterable(d: &mut Deployment) {
    let svc = d
        .create_object("/api/app/v1/service/", r#"{"name":"logged"}"#)
        .await;
    let ok = run_noop(d, &svc, "noop").await;
    let bad = run_noop(d, &svc, "fail").await;
    let all = get_json(d, "/api/v1/log?limit=100").await;
    let entries = all.as_array().unwrap();
    let ids: Vec<i64> = entries.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    for e in entries {
        let keys: HashSet<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            HashSet::from(["category", "id", "level", "message", "ts", "user"])
        );
    }
    let msgs = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let m = msgs(&all);
    assert!(
        m.iter().any(|x| x.contains(&ok) && x.ends_with("In progress")),
        "{m:?}"
    );
    assert!(m.iter().any(|x| x.contains(&ok) && x.ends_with("Success")));
    assert!(m.iter().any(|x| x.contains(&bad) && x.ends_with("Failed")));
    assert!(m
        .iter()
        .any(|x| x.starts_with("logged (service ") && x.ends_with("created")));

    let errors = get_json(d, "/api/v1/log?level=ERROR").await;
    assert!(errors.as_array().unwrap().iter().all(|e| e["level"] == "ERROR"));
    assert!(msgs(&errors).iter().any(|x| x.contains(&bad)));
    let svc_only = get_json(d, "/api/v1/log?category=service").await;
    assert!(svc_only
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["category"] == "service"));
    let text = get_json(d, &format!("/api/v1/log?text={}", &ok[..13].to_uppercase())).await;
    assert!(!text.as_array().unwrap().is_empty() && msgs(&text).iter().all(|x| x.contains(&ok[..13])));
    assert_eq!(
        get_json(d, &format!("/api/v1/log?user={}&limit=1", d.user))
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(get_json(d, "/api/v1/log?user=nobody")
        .await
        .as_array()
        .unwrap()
        .is_empty());
    let now = chrono::Utc::now().timestamp();
    let window = get_json(
        d,
        &format!(
            "/api/v1/log?time_start={}&time_end={}&limit=100",
            now - 120,
            now + 5
        ),
    )
    .await;
    assert_eq!(window.as_array().unwrap().len(), entries.len());
    assert!(get_json(d, &format!("/api/v1/log?time_end={}", now - 3600))
        .await
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        get_json(d, "/api/v1/log").await.as_array().unwrap().len(),
        20.min(entries.len())
    );
    let second = get_json(d, "/api/v1/log?limit=1&offset=1").await;
    assert_eq!(second[0]["id"], entries[1]["id"]);

    for bad_q in [
        "level=LOUD",
        "time_start=yesterday",
        "limit=0",
        "offset=-1",
        "limit=1&limit=2",
        "colour=red",
        "time_start=10&time_end=5",
    ] {
        let (status, _, json) = d
            .request(Method::GET, &format!("/api/v1/log?{bad_q}"), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad_q}: {json}");
        assert!(json["error"].is_string());
    }

    // Another tenant sees none of it; a failed login lands in the named user's log.
    let (bob, key) = d.create_user("bob").await;
    let (status, _, theirs) = d
        .request_as(Some((&bob, &key)), Method::GET, "/api/v1/log?limit=100", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(msgs(&theirs).iter().all(|x| !x.contains(&ok)), "{theirs}");
    let (status, _, _) = d
        .request_as(Some((&bob, "wrong")), Method::GET, "/api/v1/auth/", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, _, auth) = d
        .request_as(Some((&bob, &key)), Method::GET, "/api/v1/log?category=auth", None)
        .await;
    assert_eq!(auth[0]["level"], "WARN");
    assert_eq!(auth[0]["user"], bob.as_str());
}

async fn the_csv_export_is_quoted_and_defuses_formulas(d: &mut Deployment) {
    let name = r#"=HYPERLINK("http://evil","click"), then "quotes""#;
    let body = serde_json::json!({ "name": name }).to_string();
    d.create_object("/api/app/v1/service/", &body).await;
    d.create_object("/api/app/v1/service/", r#"{"name":"multi\nline"}"#)
        .await;
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/log/export?category=service", d.url))
        .basic_auth(&d.user, Some(&d.key))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = resp.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["Date", "Level", "Category", "User", "Message"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 2, "{text}");
    let evil = rows.iter().find(|r| r[4].contains("HYPERLINK")).unwrap();
    assert!(
        evil[4].starts_with("'="),
        "formula not neutralised: {:?}",
        &evil[4]
    );
    assert!(evil[4].contains(r#""quotes""#), "quotes lost: {:?}", &evil[4]);
    assert!(rows.iter().any(|r| r[4].starts_with("multi\nline")));
    chrono::NaiveDateTime::parse_from_str(&rows[0][0], "%Y-%m-%d %H:%M:%S%.6f").expect("QNAP date format");
    assert_eq!(
        (&rows[0][1], &rows[0][2], &rows[0][3]),
        ("INFO", "service", d.user.as_str())
    );
    let (status, _, _) = d
        .request(Method::GET, "/api/v1/log/export?level=nope", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn event_polling_never_misses_or_repeats_with_concurrent_writers(d: &mut Deployment) {
    let start = get_json(d, "/api/v1/event").await;
    let mut index = start["index"].as_i64().unwrap();
    assert!(start["messages"].as_array().unwrap().len() <= 20);
    let writers: Vec<_> = (0..6)
        .map(|_| {
            let (url, user, key) = (d.url.clone(), d.user.clone(), d.key.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let svc: Value = http
                    .post(format!("{url}/api/app/v1/service/"))
                    .basic_auth(&user, Some(&key))
                    .body("{}")
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                for _ in 0..15 {
                    let r = http
                        .post(format!(
                            "{url}/api/app/v1/service/{}/noop/",
                            svc["uuid"].as_str().unwrap()
                        ))
                        .basic_auth(&user, Some(&key))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), StatusCode::ACCEPTED);
                }
            })
        })
        .collect();
    let mut seen: Vec<i64> = vec![];
    let mut done = false;
    let deadline = Instant::now() + crate::support::deployment::SETTLE;
    loop {
        let page = get_json(d, &format!("/api/v1/event?index={index}")).await;
        for m in page["messages"].as_array().unwrap() {
            let m = m.as_str().unwrap();
            let mut parts = m.splitn(3, ':');
            let (category, user, json) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let e: Value = serde_json::from_str(json).unwrap();
            assert_eq!(category, e["type"].as_str().unwrap());
            assert!(user == d.user || user == "all", "{m}");
            seen.push(e["seq"].as_i64().unwrap());
        }
        index = page["index"].as_i64().unwrap();
        if done && page["messages"].as_array().unwrap().is_empty() {
            break;
        }
        if !done && writers.iter().all(|w| w.is_finished()) {
            // One more round after the writers and the workers settle.
            tokio::time::sleep(Duration::from_secs(2)).await;
            done = true;
        }
        assert!(Instant::now() < deadline, "polling did not settle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let unique: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "an event was delivered twice");
    let store = d.store().await;
    let stored: HashSet<i64> = store
        .events_after(
            stevedore_core::store::Scope::All,
            start["index"].as_i64().unwrap(),
            1_000_000,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(unique, stored, "polling missed events");
    assert!(stored.len() >= 6 * 16, "{}", stored.len());
    for bad in ["index=-1", "index=x", "since=3"] {
        let (status, _, _) = d
            .request(Method::GET, &format!("/api/v1/event?{bad}"), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

async fn wait_returns_when_the_state_is_reached_or_the_duration_ends(d: &mut Deployment) {
    let svc = d
        .create_object("/api/app/v1/service/", r#"{"name":"waiter"}"#)
        .await;
    let path = format!("/api/app/v1/service/{}/sleep/", svc["uuid"].as_str().unwrap());
    let (_, _, a) = d.request(Method::POST, &path, Some(r#"{"seconds": 1}"#)).await;
    let uuid = a["uuid"].as_str().unwrap().to_string();
    let t = Instant::now();
    let got = get_json(
        d,
        &format!("/api/v1/event/wait/action/{uuid}/success?duration=60"),
    )
    .await;
    assert_eq!(got["state"], "Success", "{got}");
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "returned by state, not by the timeout"
    );

    // Already there: at once. Never reached: the current object after the duration.
    let got = get_json(
        d,
        &format!("/api/v1/event/wait/action/{uuid}/Success?duration=60"),
    )
    .await;
    assert_eq!(got["state"], "Success");
    let t = Instant::now();
    let got = get_json(d, &format!("/api/v1/event/wait/action/{uuid}/Failed?duration=1")).await;
    assert_eq!(got["state"], "Success");
    assert!(t.elapsed() >= Duration::from_secs(1));
    let got = get_json(
        d,
        &format!(
            "/api/v1/event/wait/service/{}/Created?duration=1",
            svc["uuid"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(got["name"], "waiter");

    for (p, want) in [
        (
            format!("/api/v1/event/wait/action/{uuid}/Success?duration=abc"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/event/wait/action/not-a-uuid/Success".to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/api/v1/event/wait/spaceship/{uuid}/Success"),
            StatusCode::NOT_FOUND,
        ),
        (
            format!(
                "/api/v1/event/wait/action/{}/Success?duration=1",
                uuid::Uuid::new_v4()
            ),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (status, _, _) = d.request(Method::GET, &p, None).await;
        assert_eq!(status, want, "{p}");
    }
    let (bob, key) = d.create_user("eve").await;
    let (status, _, _) = d
        .request_as(
            Some((&bob, &key)),
            Method::GET,
            &format!("/api/v1/event/wait/action/{uuid}/Success?duration=1"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

on_both_backends!(
    every_state_change_and_object_change_is_logged_and_filterable,
    the_csv_export_is_quoted_and_defuses_formulas,
    event_polling_never_misses_or_repeats_with_concurrent_writers,
    wait_returns_when_the_state_is_reached_or_the_duration_ends,
);
