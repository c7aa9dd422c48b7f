//! The actions and objects API as the Docker Cloud / Tutum clients use it:
//! every filter, paging, cancel, retry, the v1 aliases, tenant isolation and
//! the wire details of clients-wire.md — through the real binary, on both
//! backends.

use crate::support::deployment::Deployment;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::HashSet;

async fn service(d: &Deployment, body: &str) -> Value {
    d.create_object("/api/app/v1/service/", body).await
}

async fn run(d: &Deployment, svc: &Value, verb: &str, body: Option<&str>) -> Value {
    d.submit_action(svc["uuid"].as_str().unwrap(), verb, body).await
}

fn uuids(list: &Value) -> Vec<String> {
    list["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["uuid"].as_str().unwrap().to_string())
        .collect()
}

async fn list(d: &Deployment, query: &str) -> Value {
    let (status, _, json) = d
        .request(Method::GET, &format!("/api/audit/v1/action/{query}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{query}: {json}");
    json
}

async fn the_list_is_newest_first_and_pages_like_the_sdk_expects(d: &mut Deployment) {
    let svc = service(d, r#"{"name":"pager"}"#).await;
    let mut mine = vec![];
    for _ in 0..5 {
        let a = run(d, &svc, "noop", None).await;
        mine.push(a["uuid"].as_str().unwrap().to_string());
    }
    let first = list(d, "").await;
    assert_eq!(first["meta"]["limit"], 25);
    assert_eq!(first["meta"]["offset"], 0);
    assert_eq!(first["meta"]["previous"], Value::Null);
    let all = uuids(&first);
    // Newest first: the last submitted comes before the first.
    let pos = |u: &str| all.iter().position(|x| x == u).unwrap();
    assert!(pos(&mine[4]) < pos(&mine[0]));

    // The SDK loop: ignore `next`, ask offset = meta.offset + meta.limit.
    let mut seen = vec![];
    let mut query = "?limit=2".to_string();
    for _ in 0..20 {
        let page = list(d, &query).await;
        seen.extend(uuids(&page));
        let meta = &page["meta"];
        if meta["next"].is_null() {
            break;
        }
        let (offset, limit) = (meta["offset"].as_i64().unwrap(), meta["limit"].as_i64().unwrap());
        assert!(limit > 0);
        query = format!("?offset={}&limit={limit}", offset + limit);
    }
    assert_eq!(seen.len() as i64, first["meta"]["total_count"].as_i64().unwrap());
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        seen.len(),
        "a page repeated an action"
    );
    let page = list(d, "?limit=2&offset=2").await;
    assert!(page["meta"]["next"].as_str().unwrap().contains("offset=4"));
    assert!(page["meta"]["previous"].as_str().unwrap().contains("offset=0"));
}

async fn every_filter_narrows_the_list(d: &mut Deployment) {
    let svc = service(d, r#"{"name":"filters"}"#).await;
    let ok = run(d, &svc, "noop", None).await;
    let ok_uuid = ok["uuid"].as_str().unwrap().to_string();
    d.wait_for_state(&ok_uuid, &["Success"]).await;
    let bad = run(d, &svc, "fail", None).await;
    let bad_uuid = bad["uuid"].as_str().unwrap().to_string();
    d.wait_for_state(&bad_uuid, &["Failed"]).await;

    let got = uuids(&list(d, "?state=Failed").await);
    assert!(got.contains(&bad_uuid) && !got.contains(&ok_uuid));
    let got = uuids(&list(d, "?state=Success&state=Failed").await);
    assert!(got.contains(&bad_uuid) && got.contains(&ok_uuid));
    let got = uuids(&list(d, "?state=In%20progress").await);
    assert!(!got.contains(&ok_uuid));
    assert_eq!(
        uuids(&list(d, &format!("?uuid={ok_uuid}")).await),
        vec![ok_uuid.clone()]
    );
    let got = uuids(&list(d, &format!("?uuid__startswith={}", &ok_uuid[..8])).await);
    assert!(got.contains(&ok_uuid));
    assert!(got.iter().all(|u| u.starts_with(&ok_uuid[..8])));

    let svc_uri = svc["resource_uri"].as_str().unwrap();
    let by_object = uuids(&list(d, &format!("?object={svc_uri}")).await);
    assert_eq!(by_object.len(), 3, "create + noop + fail");
    let plain_uri = format!("/api/app/v1/service/{}/", svc["uuid"].as_str().unwrap());
    assert_eq!(uuids(&list(d, &format!("?object={plain_uri}")).await), by_object);

    let past = "Wed, 17 Sep 2014 08:26:22 +0000";
    let future = "2999-01-01T00:00:00Z";
    let enc = |s: &str| s.replace(' ', "%20").replace('+', "%2B").replace(',', "%2C");
    let got = uuids(&list(d, &format!("?start_date__gte={}&object={svc_uri}", enc(past))).await);
    assert_eq!(got.len(), 3);
    assert!(uuids(&list(d, &format!("?start_date__lte={}", enc(past))).await).is_empty());
    assert!(uuids(&list(d, &format!("?start_date__gte={future}")).await).is_empty());
    let got = uuids(
        &list(
            d,
            &format!(
                "?end_date__gte={}&end_date__lte={future}&object={svc_uri}",
                enc(past)
            ),
        )
        .await,
    );
    assert_eq!(got.len(), 3, "all three ended");
    assert!(uuids(&list(d, &format!("?end_date__gte={future}")).await).is_empty());
}

async fn include_related_follows_the_object_hierarchy(d: &mut Deployment) {
    let stack = d.create_object("/api/app/v1/stack/", r#"{"name":"shop"}"#).await;
    let stack_uri = stack["resource_uri"].as_str().unwrap().to_string();
    let svc = service(d, &format!(r#"{{"name":"web","stack":"{stack_uri}"}}"#)).await;
    let svc_uri = svc["resource_uri"].as_str().unwrap().to_string();
    let ctr = d
        .create_object(
            "/api/app/v1/container/",
            &format!(r#"{{"name":"web-1","service":"{svc_uri}"}}"#),
        )
        .await;
    let ctr_uri = ctr["resource_uri"].as_str().unwrap().to_string();
    assert_eq!(ctr["parents"], serde_json::json!([svc_uri, stack_uri]));
    let other = service(d, r#"{"name":"unrelated"}"#).await;
    let svc_action = run(d, &svc, "noop", None).await["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let other_action = run(d, &other, "noop", None).await["uuid"]
        .as_str()
        .unwrap()
        .to_string();

    let related = |uri: &str| format!("?object={uri}&include_related=true&limit=100");
    let for_container = uuids(&list(d, &related(&ctr_uri)).await);
    let for_stack = uuids(&list(d, &related(&stack_uri)).await);
    let for_service = uuids(&list(d, &related(&svc_uri)).await);
    let only_container = uuids(&list(d, &format!("?object={ctr_uri}")).await);
    // Creates: stack, service, container — one action each — plus the noop on the service.
    assert_eq!(only_container.len(), 1);
    assert_eq!(for_container.len(), 4, "container + its service (2) + its stack");
    assert_eq!(for_service.len(), 4);
    assert_eq!(for_stack.len(), 4);
    for l in [&for_container, &for_stack, &for_service] {
        assert!(l.contains(&svc_action) && !l.contains(&other_action));
    }
    let (status, _, _) = d
        .request(
            Method::GET,
            &format!("/api/audit/v1/action/?object={ctr_uri}&include_related=false"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let cluster = d
        .create_object("/api/infra/v1/nodecluster/", r#"{"name":"c"}"#)
        .await;
    let cl_uri = cluster["resource_uri"].as_str().unwrap().to_string();
    let node = d
        .create_object("/api/infra/v1/node/", &format!(r#"{{"nodecluster":"{cl_uri}"}}"#))
        .await;
    let node_uri = node["resource_uri"].as_str().unwrap().to_string();
    assert_eq!(uuids(&list(d, &related(&cl_uri)).await).len(), 2);
    assert_eq!(uuids(&list(d, &related(&node_uri)).await).len(), 2);

    // The dashboard's object-type filter (an extension of the audit API).
    let by_type = |t: &str| format!("?object_type={t}&limit=100");
    assert_eq!(uuids(&list(d, &by_type("container")).await), only_container);
    assert_eq!(uuids(&list(d, &by_type("nodecluster")).await).len(), 1);
    assert_eq!(uuids(&list(d, &by_type("stack")).await).len(), 1);
}

async fn bad_filters_and_pages_are_refused_with_json(d: &mut Deployment) {
    for q in [
        "?state=Running",
        "?uuid=xyz",
        "?uuid__startswith=ZZZ",
        "?uuid__startswith=%27%3B%20drop",
        "?start_date__gte=yesterday",
        "?end_date__lte=2014-13-45",
        "?object=/etc/passwd",
        "?include_related=true",
        "?include_related=maybe&object=x",
        "?object_type=planet",
        "?limit=-1",
        "?limit=ten",
        "?offset=-5",
        "?offset=1.5",
        "?limit=1&limit=2",
        "?colour=blue",
    ] {
        let (status, _, json) = d
            .request(Method::GET, &format!("/api/audit/v1/action/{q}"), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {json}");
        assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()), "{q}");
    }
    let page = list(d, "?limit=0").await;
    assert_eq!(page["meta"]["limit"], 1000);
    let page = list(d, "?limit=100000&offset=999999").await;
    assert_eq!(page["meta"]["limit"], 1000);
    assert_eq!(page["objects"], serde_json::json!([]));
    assert_eq!(page["meta"]["next"], Value::Null);
}

async fn cancel_and_retry_follow_the_state_rules(d: &mut Deployment) {
    let svc = service(d, r#"{"name":"cancel"}"#).await;
    let long = run(d, &svc, "sleep", Some(r#"{"seconds": 30}"#)).await;
    let long_uuid = long["uuid"].as_str().unwrap().to_string();
    let queued = run(d, &svc, "noop", None).await;
    let queued_uuid = queued["uuid"].as_str().unwrap().to_string();
    assert_eq!(queued["state"], "Pending");

    // Pending → Canceled at once; the object stays busy with the long one.
    let (status, headers, c) = d
        .request(
            Method::POST,
            &format!("/api/audit/v1/action/{queued_uuid}/cancel/"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{c}");
    assert_eq!(c["state"], "Canceled");
    assert_eq!(
        headers["x-dockercloud-action-uri"],
        format!("/api/audit/v1/action/{queued_uuid}/").as_str()
    );

    // In progress → Canceling → Canceled by the worker, with a log line.
    let deadline = tokio::time::Instant::now() + crate::support::deployment::SETTLE;
    loop {
        let logs = d
            .store()
            .await
            .logs(long_uuid.parse().unwrap(), None)
            .await
            .unwrap();
        if !logs.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "sleep never started");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, _, c) = d
        .request(
            Method::POST,
            &format!("/api/audit/v1/action/{long_uuid}/cancel/"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{c}");
    assert!(
        matches!(c["state"].as_str(), Some("Canceling") | Some("Canceled")),
        "{c}"
    );
    let done = d
        .wait_for_state(&long_uuid, &["Canceled", "Success", "Failed"])
        .await;
    assert_eq!(done["state"], "Canceled");
    assert_eq!(done["can_be_retried"], true);
    let logs = d
        .store()
        .await
        .logs(long_uuid.parse().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(logs.last().unwrap().log, "canceled");

    // Final actions cannot be canceled again.
    let (status, _, e) = d
        .request(
            Method::POST,
            &format!("/api/audit/v1/action/{long_uuid}/cancel/"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(e["error"].as_str().unwrap().contains("Canceled"), "{e}");

    // Retry creates a new action for the same operation; the old one is unchanged.
    let (status, headers, r) = d
        .request(
            Method::POST,
            &format!("/api/v1/action/{queued_uuid}/retry/"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{r}");
    let new_uuid = r["uuid"].as_str().unwrap().to_string();
    assert_ne!(new_uuid, queued_uuid);
    assert_eq!(
        headers["x-tutum-action-uri"],
        format!("/api/audit/v1/action/{new_uuid}/").as_str()
    );
    assert_eq!(
        (r["action"].as_str(), r["object"].as_str()),
        (queued["action"].as_str(), queued["object"].as_str())
    );
    assert_eq!(
        d.wait_for_state(&new_uuid, &["Success", "Failed"]).await["state"],
        "Success"
    );
    let (_, _, old) = d
        .request(Method::GET, &format!("/api/audit/v1/action/{queued_uuid}/"), None)
        .await;
    assert_eq!(old["state"], "Canceled");

    // Retry of an unfinished action is a conflict.
    let running = run(d, &svc, "sleep", Some(r#"{"seconds": 5}"#)).await;
    let (status, _, e) = d
        .request(
            Method::POST,
            &format!(
                "/api/audit/v1/action/{}/retry/",
                running["uuid"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    let (status, _, _) = d
        .request(
            Method::GET,
            &format!(
                "/api/audit/v1/action/{}/cancel/",
                running["uuid"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    // An action says whether a retry would be accepted: not for a create
    // with no create operation configured, nor once its object is gone.
    let (_, _, creates) = d
        .request(
            Method::GET,
            &format!(
                "/api/audit/v1/action/?object={}&limit=100",
                svc["resource_uri"].as_str().unwrap()
            ),
            None,
        )
        .await;
    let create = creates["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "Service Create")
        .unwrap_or_else(|| panic!("no create action: {creates}"));
    let (_, _, create) = d
        .request(Method::GET, create["resource_uri"].as_str().unwrap(), None)
        .await;
    assert_eq!(create["can_be_retried"], false, "{create}");
    let (status, _, _) = d
        .request(
            Method::POST,
            &format!("{}retry/", create["resource_uri"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, _, done) = d
        .request(Method::GET, &format!("/api/audit/v1/action/{new_uuid}/"), None)
        .await;
    assert_eq!(done["can_be_retried"], true, "{done}");
    let (status, _, _) = d
        .request(Method::DELETE, svc["resource_uri"].as_str().unwrap(), None)
        .await;
    assert!(status.is_success(), "{status}");
    let (_, _, done) = d
        .request(Method::GET, &format!("/api/audit/v1/action/{new_uuid}/"), None)
        .await;
    assert_eq!(done["can_be_retried"], false, "the object is gone: {done}");
}

async fn tutum_v1_aliases_and_namespaced_paths_behave_the_same(d: &mut Deployment) {
    let svc = service(d, r#"{"name":"alias"}"#).await;
    let a = run(d, &svc, "noop", None).await;
    let uuid = a["uuid"].as_str().unwrap();
    let ns = d.user.clone();
    for path in [
        format!("/api/v1/action/{uuid}/"),
        format!("/api/audit/v1/{ns}/action/{uuid}/"),
        format!("/api/audit/v1/action/{uuid}"),
    ] {
        let (status, _, json) = d.request(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(json["uuid"], uuid);
    }
    for path in [
        "/api/v1/action/".to_string(),
        format!("/api/audit/v1/{ns}/action/"),
    ] {
        let (status, _, json) = d.request(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(uuids(&json).contains(&uuid.to_string()), "{path}");
    }
    let (status, _, _) = d
        .request(Method::GET, "/api/audit/v1/someone-else/action/", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn objects_are_listed_updated_and_terminated_with_actions(d: &mut Deployment) {
    let svc = service(d, r#"{"name":"crud","image":"nginx","replicas":2}"#).await;
    let uuid = svc["uuid"].as_str().unwrap().to_string();
    let (status, _, listed) = d.request(Method::GET, "/api/app/v1/service/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(uuids(&listed).contains(&uuid));
    let item = format!("/api/app/v1/service/{uuid}/");

    let (status, headers, patched) = d
        .request(
            Method::PATCH,
            &item,
            Some(r#"{"image":"caddy","replicas":null,"name":"crud2"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        (patched["image"].as_str(), patched["name"].as_str()),
        (Some("caddy"), Some("crud2"))
    );
    assert!(patched.get("replicas").is_none());
    let update_uri = headers["x-dockercloud-action-uri"].to_str().unwrap().to_string();
    let (_, _, update) = d.request(Method::GET, &update_uri, None).await;
    assert_eq!(
        (update["action"].as_str(), update["state"].as_str()),
        (Some("Service Update"), Some("Success"))
    );
    for bad in [r#"{"uuid":"x"}"#, r#"{"name":5}"#, "{}", "[]", "nope"] {
        let (status, _, e) = d.request(Method::PATCH, &item, Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {e}");
    }

    let (status, headers, gone) = d.request(Method::DELETE, &item, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{gone}");
    assert_eq!(gone["state"], "Terminated");
    let term_uri = headers["x-tutum-action-uri"].to_str().unwrap().to_string();
    let (_, _, term) = d.request(Method::GET, &term_uri, None).await;
    assert_eq!(term["action"], "Service Terminate");
    let (status, _, _) = d.request(Method::DELETE, &item, None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _, _) = d.request(Method::POST, &format!("{item}noop/"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "a terminated object runs nothing");
    let (_, _, listed) = d.request(Method::GET, "/api/app/v1/service/", None).await;
    assert!(!uuids(&listed).contains(&uuid));
    let (_, _, listed) = d
        .request(Method::GET, "/api/app/v1/service/?include_deleted=true", None)
        .await;
    assert!(uuids(&listed).contains(&uuid));
}

async fn other_tenants_cannot_list_cancel_or_retry(d: &mut Deployment) {
    let svc = service(d, r#"{"name":"private"}"#).await;
    let a = run(d, &svc, "sleep", Some(r#"{"seconds": 2}"#)).await;
    let uuid = a["uuid"].as_str().unwrap().to_string();
    let (bob, key) = d.create_user("mallory").await;
    let bob = Some((bob.as_str(), key.as_str()));
    let (status, _, mine) = d
        .request_as(bob, Method::GET, "/api/audit/v1/action/", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mine["meta"]["total_count"], 0, "{mine}");
    let (_, _, mine) = d
        .request_as(
            bob,
            Method::GET,
            &format!("/api/audit/v1/action/?uuid={uuid}"),
            None,
        )
        .await;
    assert_eq!(mine["meta"]["total_count"], 0);
    let (_, _, objs) = d.request_as(bob, Method::GET, "/api/app/v1/service/", None).await;
    assert_eq!(objs["meta"]["total_count"], 0);
    for verb in ["cancel", "retry"] {
        let (status, _, _) = d
            .request_as(
                bob,
                Method::POST,
                &format!("/api/audit/v1/action/{uuid}/{verb}/"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{verb}");
    }
    let item = format!("/api/app/v1/service/{}/", svc["uuid"].as_str().unwrap());
    for method in [Method::PATCH, Method::DELETE] {
        let (status, _, _) = d
            .request_as(bob, method.clone(), &item, Some(r#"{"name":"pwned"}"#))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}");
    }
    let (_, _, still) = d.request(Method::GET, &item, None).await;
    assert_eq!(still["name"], "private");
    let (_, _, a) = d
        .request(Method::GET, &format!("/api/audit/v1/action/{uuid}/"), None)
        .await;
    assert_ne!(a["state"], "Canceled");
}

/// clients-wire.md §2–4 and §7, sent exactly as the Python SDKs send it.
async fn the_python_clients_wire_details_hold(d: &mut Deployment) {
    let svc = service(d, r#"{"name":"wire"}"#).await;
    let a = run(d, &svc, "noop", None).await;
    let uuid = a["uuid"].as_str().unwrap().to_string();
    d.wait_for_state(&uuid, &["Success"]).await;
    let http = reqwest::Client::new();
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:{}", d.user, d.key)
        )
    );
    let send = |method: Method, path: String, ua: &'static str| {
        http.request(method, format!("{}{}", d.url, path))
            .header("Authorization", &basic)
            .header("Content-Type", "application/json")
            .header("User-Agent", ua)
    };
    const DC: &str = "dockercloud-cli/1.0.9 python-dockercloud/1.0.12";
    const TUTUM: &str = "tutum-cli/0.21.1 python-tutum/0.21.1";
    let date = regex_like_rfc2822;

    // Every 2xx body is a JSON object; GETs carry Content-Type too.
    for (path, ua) in [
        ("/api/v1/auth/".to_string(), TUTUM),
        ("/auth/".to_string(), DC),
        ("/api/audit/v1/action/".to_string(), DC),
        (
            format!("/api/audit/v1/action/?uuid__startswith={}", &uuid[..8]),
            DC,
        ),
        (format!("/api/audit/v1/action/{uuid}/"), DC),
        ("/api/v1/action/".to_string(), TUTUM),
    ] {
        let resp = send(Method::GET, path.clone(), ua).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let json: Value = resp.json().await.unwrap();
        assert!(json.is_object(), "{path}: {json}");
    }
    let detail: Value = send(Method::GET, format!("/api/audit/v1/action/{uuid}/"), DC)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for key in [
        "action",
        "end_date",
        "ip",
        "location",
        "method",
        "object",
        "path",
        "resource_uri",
        "start_date",
        "state",
        "user_agent",
        "uuid",
        "user",
        "is_user_action",
        "can_be_canceled",
        "can_be_retried",
    ] {
        assert!(detail.get(key).is_some(), "missing {key}");
    }
    for key in [
        "logs", "cancel", "retry", "refresh", "fetch", "list", "delete", "save", "pk", "is_dirty",
    ] {
        assert!(detail.get(key).is_none(), "{key} shadows an SDK method");
    }
    assert!(
        date(detail["start_date"].as_str().unwrap()),
        "{}",
        detail["start_date"]
    );
    assert!(date(detail["end_date"].as_str().unwrap()));
    // TARGET column: object.strip("/").split("/", 3)[3]
    let object = detail["object"].as_str().unwrap();
    assert_eq!(
        object.trim_matches('/').splitn(4, '/').nth(3).unwrap(),
        format!("{}/service/{}", d.user, svc["uuid"].as_str().unwrap())
    );

    // Cancel/retry as the SDK posts them: empty body, Content-Length 0, JSON content type.
    let resp = send(
        Method::POST,
        format!("{}retry/", detail["resource_uri"].as_str().unwrap()),
        DC,
    )
    .header("Content-Length", "0")
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(resp.headers().contains_key("x-dockercloud-action-uri"));
    assert!(resp.headers().contains_key("x-tutum-action-uri"));
    let retried: Value = resp.json().await.unwrap();
    let ru = retried["uuid"].as_str().unwrap();
    assert_eq!(ru, ru.to_lowercase());
    assert_eq!(uuid::Uuid::parse_str(ru).unwrap().get_version_num(), 4);
    assert_eq!(retried["user_agent"], DC);

    // Short-id resolution: exactly one match for an 8-character prefix.
    let found: Value = send(
        Method::GET,
        format!("/api/audit/v1/action/?uuid__startswith={}", &ru[..8]),
        DC,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(found["meta"]["total_count"], 1);

    // 401 for a wrong key, with a body the SDK echoes.
    let resp = http
        .get(format!("{}/api/v1/auth/", d.url))
        .header("Authorization", "Basic d3Jvbmc6d3Jvbmc=")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

/// `Wed, 17 Sep 2014 08:26:22 +0000`, exactly.
fn regex_like_rfc2822(s: &str) -> bool {
    chrono::NaiveDateTime::parse_from_str(s, "%a, %d %b %Y %H:%M:%S +0000").is_ok()
        && s.ends_with(" +0000")
        && s.len() == 31
}

on_both_backends!(
    the_list_is_newest_first_and_pages_like_the_sdk_expects,
    every_filter_narrows_the_list,
    include_related_follows_the_object_hierarchy,
    bad_filters_and_pages_are_refused_with_json,
    cancel_and_retry_follow_the_state_rules,
    tutum_v1_aliases_and_namespaced_paths_behave_the_same,
    objects_are_listed_updated_and_terminated_with_actions,
    other_tenants_cannot_list_cancel_or_retry,
    the_python_clients_wire_details_hold,
);

/// `ip` from trusted proxies' X-Forwarded-For and `location` from a GeoIP
/// database, both switched on in the config: the client is the rightmost hop
/// that is not a trusted proxy, so what a client writes to the left of it
/// is ignored, as is the whole header from an untrusted peer.
mod client_location {
    use crate::support::deployment::{Backend, Deployment, TEST_CONFIG};
    use reqwest::Method;

    async fn located(backend: Backend) {
        let db = concat!(env!("CARGO_MANIFEST_DIR"), "/api/tests/fixtures/geoip-test.mmdb");
        let config = format!(
            "geoip_database = \"{db}\"\ntrusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\"]\n{TEST_CONFIG}"
        );
        let d = Deployment::start_with(backend, &config).await;
        let svc = d.create_object("/api/app/v1/service/", "{}").await;
        let path = format!("/api/app/v1/service/{}/noop/", svc["uuid"].as_str().unwrap());
        let resp = reqwest::Client::new()
            .post(format!("{}{}", d.url, path))
            .basic_auth(&d.user, Some(&d.key))
            .header("X-Forwarded-For", "6.6.6.6, 56.78.90.12, 10.0.0.1")
            .send()
            .await
            .unwrap();
        let a: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(
            (a["ip"].as_str(), a["location"].as_str()),
            (Some("56.78.90.12"), Some("New York, USA")),
            "the rightmost untrusted hop, not the forged leftmost"
        );
        let (_, _, local) = d.request(Method::POST, &path, None).await;
        assert_eq!(
            (local["ip"].as_str(), local["location"].as_str()),
            (Some("127.0.0.1"), Some(""))
        );

        let plain = Deployment::start(backend).await;
        let svc = plain.create_object("/api/app/v1/service/", "{}").await;
        let resp = reqwest::Client::new()
            .post(format!(
                "{}/api/app/v1/service/{}/noop/",
                plain.url,
                svc["uuid"].as_str().unwrap()
            ))
            .basic_auth(&plain.user, Some(&plain.key))
            .header("X-Forwarded-For", "56.78.90.12")
            .send()
            .await
            .unwrap();
        let a: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(
            a["ip"], "127.0.0.1",
            "an untrusted X-Forwarded-For must be ignored"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        located(Backend::Embedded).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_rabbitmq() {
        located(Backend::PostgresRabbit).await;
    }
}
