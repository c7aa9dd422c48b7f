//! Queue positions of Pending actions end to end: `queue_position` and
//! `waiting_for` on the verb's answer, the detail, the list (audit and
//! Tutum v1 paths) and the state long-poll; how they move when an action
//! ahead leaves the queue (a cancel while Pending, a promotion); the one
//! `update` event per move on the events websocket; the CLI's `action ls`
//! and `inspect`; and another tenant seeing none of it.

use crate::support::deployment::{run_cli, Deployment};
use crate::support::ws::{ws_connect, ws_json, Ws};
use reqwest::{Method, StatusCode};
use serde_json::Value;

on_both_backends!(pending_actions_show_their_place_in_the_queue_and_move_up);

fn action_uri(uuid: &str) -> String {
    format!("/api/audit/v1/action/{uuid}/")
}

/// `(queue_position, waiting_for)` of an action's JSON.
fn place(a: &Value) -> (Option<i64>, Option<String>) {
    (
        a["queue_position"].as_i64(),
        a["waiting_for"].as_str().map(str::to_string),
    )
}

fn waiting(position: i64, behind: &str) -> (Option<i64>, Option<String>) {
    (Some(position), Some(action_uri(behind)))
}

async fn detail(d: &Deployment, uuid: &str) -> Value {
    let (status, _, a) = d.request(Method::GET, &action_uri(uuid), None).await;
    assert_eq!(status, StatusCode::OK, "{a}");
    a
}

/// The places the list shows for `uuids` (the object's actions, newest
/// first), on the audit path and on the Tutum v1 alias.
async fn listed(d: &Deployment, svc_uri: &str, uuids: &[&str]) -> Vec<(Option<i64>, Option<String>)> {
    let mut seen = Vec::new();
    for base in ["/api/audit/v1/action/", "/api/v1/action/"] {
        let (status, _, page) = d
            .request(Method::GET, &format!("{base}?object={svc_uri}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let objects = page["objects"].as_array().unwrap();
        let places: Vec<_> = uuids
            .iter()
            .map(|u| {
                let a = objects.iter().find(|a| a["uuid"] == *u).expect("listed");
                place(a)
            })
            .collect();
        if seen.is_empty() {
            seen = places;
        } else {
            assert_eq!(places, seen, "{base}");
        }
    }
    seen
}

/// Reads event frames until the `update` of `uuid` in `state`; returns it.
async fn event_of(ws: &mut Ws, uuid: &str, state: &str) -> Value {
    loop {
        let f = ws_json(ws).await;
        if f["uuid"] == uuid && f["action"] == "update" && f["state"] == state {
            return f;
        }
    }
}

async fn pending_actions_show_their_place_in_the_queue_and_move_up(d: &mut Deployment) {
    let stream = d.stream_url().await;
    let auth = (d.user.clone(), d.key.clone());
    let mut events = ws_connect(&stream, "/api/audit/v1/events", Some((&auth.0, &auth.1)))
        .await
        .expect("events handshake");
    assert_eq!(ws_json(&mut events).await["type"], "auth");

    let svc = d.new_service().await;
    let (_, _, svc_json) = d
        .request(Method::GET, &format!("/api/app/v1/service/{svc}/"), None)
        .await;
    let svc_uri = svc_json["resource_uri"].as_str().unwrap().to_string();
    // One running (until canceled), three waiting behind it.
    let running = d.submit_action(&svc, "sleep", Some(r#"{"seconds": 600}"#)).await;
    assert_eq!(running["state"], "In progress", "{running}");
    assert_eq!(place(&running), (None, None), "only a Pending action has a place");
    let a = running["uuid"].as_str().unwrap().to_string();
    let mut queued = Vec::new();
    for _ in 0..3 {
        queued.push(d.submit_action(&svc, "noop", None).await);
    }
    let [b, c, e] = [0, 1, 2].map(|i| queued[i]["uuid"].as_str().unwrap().to_string());
    // The verb's answer already carries the place.
    assert_eq!(place(&queued[0]), waiting(1, &a));
    assert_eq!(place(&queued[1]), waiting(2, &b));
    assert_eq!(place(&queued[2]), waiting(3, &c));
    // So do the detail and the list.
    assert_eq!(place(&detail(d, &b).await), waiting(1, &a));
    assert_eq!(place(&detail(d, &e).await), waiting(3, &c));
    // And the long-poll that waits for a state answers with the same JSON.
    let (status, _, now) = d
        .request(
            Method::GET,
            &format!("/api/v1/event/wait/action/{c}/Pending?duration=1"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{now}");
    assert_eq!(place(&now), waiting(2, &b));
    assert_eq!(
        listed(d, &svc_uri, &[&a, &b, &c, &e]).await,
        vec![(None, None), waiting(1, &a), waiting(2, &b), waiting(3, &c)]
    );

    // So do the CLI's table and inspect.
    let no_saved = d.dir.path().join("no-credentials.toml").display().to_string();
    let env = [
        ("STEVEDORE_URL", d.url.as_str()),
        ("STEVEDORE_USER", d.user.as_str()),
        ("STEVEDORE_APIKEY", d.key.as_str()),
        ("STEVEDORE_CREDENTIALS", no_saved.as_str()),
        ("NO_COLOR", "1"),
    ];
    let table = run_cli(&["action", "ls", "--object", &svc_uri], &env).await;
    let row = |u: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&u[..8]))
            .unwrap_or_else(|| panic!("{u} not in\n{table}"))
            .trim_end()
            .to_string()
    };
    assert!(row(&b).ends_with("Pending #1"), "{table}");
    assert!(row(&e).ends_with("Pending #3"), "{table}");
    assert!(row(&a).ends_with("In progress"), "{table}");
    let inspected: Value = serde_json::from_str(&run_cli(&["action", "inspect", &c], &env).await).unwrap();
    assert_eq!(place(&inspected), waiting(2, &b));

    // Another tenant sees none of it.
    let (other, other_key) = d.create_user("queue-outsider").await;
    let (status, _, _) = d
        .request_as(Some((&other, &other_key)), Method::GET, &action_uri(&c), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, page) = d
        .request_as(
            Some((&other, &other_key)),
            Method::GET,
            &format!("/api/audit/v1/action/?object={svc_uri}"),
            None,
        )
        .await;
    assert_eq!(page["objects"], serde_json::json!([]), "{page}");

    // Cancel the head of the queue: those behind move up, and the stream
    // says so with one update of the first of them, after the cancel.
    let (status, _, canceled) = d
        .request(Method::POST, &format!("{}cancel/", action_uri(&b)), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{canceled}");
    assert_eq!(canceled["state"], "Canceled");
    assert_eq!(place(&canceled), (None, None));
    let gone = event_of(&mut events, &b, "Canceled").await;
    let moved = event_of(&mut events, &c, "Pending").await;
    assert!(moved["seq"].as_i64() > gone["seq"].as_i64(), "{gone} {moved}");
    assert_eq!(moved["parents"][0], svc_uri.as_str(), "{moved}");
    assert_eq!(place(&detail(d, &c).await), waiting(1, &a));
    assert_eq!(place(&detail(d, &e).await), waiting(2, &c));

    // Cancel the running one: the next is promoted, the last moves up to 1.
    let (status, _, _) = d
        .request(Method::POST, &format!("{}cancel/", action_uri(&a)), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let promoted = event_of(&mut events, &c, "In progress").await;
    let moved = event_of(&mut events, &e, "Pending").await;
    assert!(moved["seq"].as_i64() > promoted["seq"].as_i64());
    // The promoted one may already be done (a noop): either way it has no
    // place any more; the last one waits behind it, or runs itself.
    let now = detail(d, &e).await;
    if now["state"] == "Pending" {
        assert_eq!(place(&now), waiting(1, &c));
    }
    assert_eq!(place(&detail(d, &c).await), (None, None));
    let done = d.wait_for_state(&e, &["Success"]).await;
    assert_eq!(place(&done), (None, None));
}
