//! The submit → queue → execute → report path, end to end through the real
//! binary and HTTP, on both the embedded and the PostgreSQL + RabbitMQ backends.

use crate::support::deployment::{log_lines, Deployment};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use stevedore_core::store::Scope;
use uuid::Uuid;

async fn new_service(d: &Deployment) -> Value {
    d.create_object("/api/app/v1/service/", r#"{"name": "web"}"#)
        .await
}

async fn action_count(d: &Deployment) -> usize {
    let events = d
        .store()
        .await
        .events_after(Scope::All, 0, 100_000)
        .await
        .unwrap();
    events
        .iter()
        .filter(|e| e.object_type == "action" && e.action.as_str() == "create")
        .count()
}

async fn an_operation_reaches_success_with_its_log_lines_stored(d: &mut Deployment) {
    let svc = new_service(d).await;
    let svc_uri = svc["resource_uri"].as_str().unwrap().to_string();
    let svc_uuid = svc["uuid"].as_str().unwrap().to_string();
    let (status, headers, action) = d
        .request(
            Method::POST,
            &format!("/api/app/v1/service/{svc_uuid}/start/"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{action}");
    let uuid = action["uuid"].as_str().unwrap().to_string();
    let parsed = Uuid::parse_str(&uuid).unwrap();
    assert_eq!(parsed.get_version_num(), 4);
    assert_eq!(uuid, uuid.to_lowercase());
    let uri = format!("/api/audit/v1/action/{uuid}/");
    assert_eq!(headers["x-dockercloud-action-uri"], uri.as_str());
    assert_eq!(headers["x-tutum-action-uri"], uri.as_str());
    assert_eq!(action["resource_uri"], uri.as_str());
    assert_eq!(action["action"], "Service Start");
    assert_eq!(action["object"], svc_uri.as_str());
    assert_eq!(action["method"], "POST");
    assert_eq!(action["user"], d.user.as_str());
    assert_eq!(action["user_agent"], "stevedore-tests/1.0");
    assert_eq!(action["ip"], "127.0.0.1");
    assert!(
        matches!(action["state"].as_str(), Some("In progress") | Some("Success")),
        "{action}"
    );

    let done = d.wait_for_state(&uuid, &["Success", "Failed"]).await;
    assert_eq!(done["state"], "Success", "{done}");
    let end = done["end_date"].as_str().expect("end_date set");
    chrono::DateTime::parse_from_str(end, "%a, %d %b %Y %H:%M:%S %z").expect("RFC 2822 end_date");
    assert!(end.ends_with(" +0000"));
    assert_eq!(done["can_be_canceled"], false);
    assert_eq!(done["can_be_retried"], true);

    let lines = log_lines(&d.store().await, &uuid).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.contains(&format!("starting {svc_uuid}")), "{lines:?}");
    assert!(
        lines.contains(&"warming up".to_string()),
        "stderr line missing: {lines:?}"
    );
    assert!(lines.contains(&"started".to_string()), "{lines:?}");
}

async fn a_failing_command_reaches_failed_with_the_reason_logged(d: &mut Deployment) {
    let svc = new_service(d).await;
    let (status, _, action) = d
        .request(
            Method::POST,
            &format!("/api/app/v1/service/{}/fail/", svc["uuid"].as_str().unwrap()),
            Some("{}"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let uuid = action["uuid"].as_str().unwrap().to_string();
    let done = d.wait_for_state(&uuid, &["Success", "Failed"]).await;
    assert_eq!(done["state"], "Failed");
    let lines = log_lines(&d.store().await, &uuid).await;
    assert!(lines.contains(&"failing".to_string()), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("exited with code 3")),
        "{lines:?}"
    );
}

async fn bad_input_gets_json_errors_and_creates_no_action(d: &mut Deployment) {
    let svc = new_service(d).await;
    let svc_uuid = svc["uuid"].as_str().unwrap().to_string();
    let before = action_count(d).await;
    let random = Uuid::new_v4();
    let cases: Vec<(Method, String, Option<&str>, StatusCode)> = vec![
        (
            Method::POST,
            format!("/api/app/v1/spaceship/{svc_uuid}/start/"),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            format!("/api/app/v1/service/{svc_uuid}/explode/"),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/api/app/v1/service/not-a-uuid/start/".into(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            format!(
                "/api/app/v1/service/{}/start/",
                svc_uuid.to_uppercase().replace('-', "")
            ),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            format!("/api/app/v1/service/{random}/start/"),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            format!("/api/app/v1/service/{svc_uuid}/start/"),
            Some("{not json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            format!("/api/app/v1/service/{svc_uuid}/start/"),
            Some("[1,2]"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/app/v1/service/".into(),
            Some(r#"{"name": 5}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/app/v1/service/".into(),
            Some(r#"{"stack": "nope"}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/app/v1/someone-else/service/".into(),
            Some("{}"),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/api/audit/v1/action/zzz/".into(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            format!("/api/audit/v1/action/{random}/"),
            None,
            StatusCode::NOT_FOUND,
        ),
        (Method::GET, "/no/such/route".into(), None, StatusCode::NOT_FOUND),
        (
            Method::DELETE,
            "/healthz".into(),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::PUT,
            format!("/api/app/v1/service/{svc_uuid}/start/"),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    for (method, path, body, want) in cases {
        let (status, _, json) = d.request(method.clone(), &path, body).await;
        assert_eq!(status, want, "{method} {path} {body:?} → {json}");
        assert!(
            json["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}: no error message: {json}"
        );
    }
    // One byte over the limit: the server reads the whole body while checking
    // it, so the connection closes cleanly after the 413.
    let huge = format!("{{\"x\": \"{}\"}}", "a".repeat(stevedore_api::MAX_BODY_BYTES - 8));
    assert_eq!(huge.len(), stevedore_api::MAX_BODY_BYTES + 1);
    let (status, _, json) = d
        .request(
            Method::POST,
            &format!("/api/app/v1/service/{svc_uuid}/start/"),
            Some(&huge),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{json}");
    assert!(json["error"].is_string());

    let path = format!("/api/app/v1/service/{svc_uuid}/start/");
    for auth in [
        None,
        Some((d.user.as_str(), "wrong-key")),
        Some(("nobody", d.key.as_str())),
    ] {
        let (status, headers, json) = d.request_as(auth, Method::POST, &path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(json["error"].is_string());
        assert!(headers.contains_key("www-authenticate"));
    }
    assert_eq!(
        action_count(d).await,
        before,
        "a rejected request recorded an action"
    );
}

async fn another_tenant_sees_none_of_it(d: &mut Deployment) {
    let svc = new_service(d).await;
    let svc_uuid = svc["uuid"].as_str().unwrap().to_string();
    let (_, _, action) = d
        .request(
            Method::POST,
            &format!("/api/app/v1/service/{svc_uuid}/noop/"),
            None,
        )
        .await;
    let uuid = action["uuid"].as_str().unwrap().to_string();
    let (bob, bob_key) = d.create_user("bob").await;
    let bob = Some((bob.as_str(), bob_key.as_str()));
    let before = action_count(d).await;
    for (method, path) in [
        (Method::GET, format!("/api/audit/v1/action/{uuid}/")),
        (Method::GET, format!("/api/v1/action/{uuid}/")),
        (Method::GET, format!("/api/app/v1/service/{svc_uuid}/")),
        (Method::POST, format!("/api/app/v1/service/{svc_uuid}/noop/")),
        (
            Method::POST,
            format!("/api/app/v1/{}/service/{svc_uuid}/noop/", d.user),
        ),
    ] {
        let (status, _, json) = d.request_as(bob, method.clone(), &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {json}");
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["error"],
            "{method} {path} answered more than an error: {json}"
        );
    }
    assert_eq!(action_count(d).await, before);
    let (status, _, _) = d
        .request(Method::GET, &format!("/api/audit/v1/action/{uuid}/"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

async fn actions_on_one_object_wait_their_turn(d: &mut Deployment) {
    let svc = new_service(d).await;
    let svc_uuid = svc["uuid"].as_str().unwrap().to_string();
    let (_, _, first) = d
        .request(
            Method::POST,
            &format!("/api/app/v1/service/{svc_uuid}/sleep/"),
            Some(r#"{"seconds": 1}"#),
        )
        .await;
    let (status, _, second) = d
        .request(
            Method::POST,
            &format!("/api/app/v1/service/{svc_uuid}/noop/"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(second["state"], "Pending", "{second}");
    assert_eq!(second["can_be_canceled"], true);
    let second = d
        .wait_for_state(second["uuid"].as_str().unwrap(), &["Success", "Failed"])
        .await;
    let first = d
        .wait_for_state(first["uuid"].as_str().unwrap(), &["Success", "Failed"])
        .await;
    assert_eq!(
        (first["state"].as_str(), second["state"].as_str()),
        (Some("Success"), Some("Success"))
    );
    // The second started only when the first ended.
    let first_end = chrono::DateTime::parse_from_rfc2822(first["end_date"].as_str().unwrap()).unwrap();
    let second_end = chrono::DateTime::parse_from_rfc2822(second["end_date"].as_str().unwrap()).unwrap();
    assert!(second_end >= first_end);
}

async fn objects_link_to_their_parents(d: &mut Deployment) {
    let (status, headers, stack) = d
        .request(Method::POST, "/api/app/v1/stack/", Some(r#"{"name":"shop"}"#))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stack}");
    let create_uri = headers["x-dockercloud-action-uri"].to_str().unwrap().to_string();
    let (_, _, create) = d.request(Method::GET, &create_uri, None).await;
    assert_eq!(
        (create["action"].as_str(), create["state"].as_str()),
        (Some("Stack Create"), Some("Success"))
    );
    let stack_uri = stack["resource_uri"].as_str().unwrap();
    assert_eq!(
        stack_uri,
        format!(
            "/api/app/v1/{}/stack/{}/",
            d.user,
            stack["uuid"].as_str().unwrap()
        )
    );
    let body = format!(r#"{{"name":"web","stack":"{stack_uri}","image":"nginx"}}"#);
    let svc = d
        .create_object(&format!("/api/app/v1/{}/service/", d.user), &body)
        .await;
    assert_eq!(svc["stack"], stack_uri);
    assert_eq!(svc["image"], "nginx");
    let (status, _, fetched) = d
        .request(
            Method::GET,
            &format!("/api/app/v1/service/{}/", svc["uuid"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched["parents"], serde_json::json!([stack_uri]));
}

async fn the_clients_auth_probes_answer_with_json_objects(d: &mut Deployment) {
    for path in ["/api/v1/auth/", "/auth/", "/api/audit/v1/auth/"] {
        let (status, _, json) = d.request(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(json["user"], d.user.as_str());
        let (status, _, _) = d.request_as(None, Method::GET, path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (status, _, json) = d.request_as(None, Method::GET, "/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

on_both_backends!(
    an_operation_reaches_success_with_its_log_lines_stored,
    a_failing_command_reaches_failed_with_the_reason_logged,
    bad_input_gets_json_errors_and_creates_no_action,
    another_tenant_sees_none_of_it,
    actions_on_one_object_wait_their_turn,
    objects_link_to_their_parents,
    the_clients_auth_probes_answer_with_json_objects,
);
