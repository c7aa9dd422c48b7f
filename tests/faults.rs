//! Faults done for real against the PostgreSQL + RabbitMQ deployment.

mod common;

use common::{Backend, Deployment};
use reqwest::{Method, StatusCode};
use std::time::Duration;
use stevedore_shared::store::Scope;
use uuid::Uuid;

/// A worker killed with SIGKILL mid-action does not leave the action In
/// progress: its lease expires, another worker's reaper re-queues it, and it
/// runs to Success on the other worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_survives_its_worker_being_killed() {
    let mut d = Deployment::start(Backend::PostgresRabbit).await;
    let svc = d.create_object("/api/app/v1/service/", r#"{"name":"db"}"#).await;
    let path = format!("/api/app/v1/service/{}/sleep/", svc["uuid"].as_str().unwrap());
    let (status, _, action) = d.request(Method::POST, &path, Some(r#"{"seconds": 2}"#)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let uuid = Uuid::parse_str(action["uuid"].as_str().unwrap()).unwrap();
    let store = d.store().await;

    // Wait until worker-1 has claimed it and started sleeping.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.logs(uuid, None).await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never started:\n{}",
            d.logs("worker-1")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.kill(1).await; // children[0] is the API, [1] the first worker
    let a = store.get_action(Scope::All, uuid).await.unwrap().unwrap();
    assert_eq!(a.state.as_str(), "In progress");
    assert_eq!(a.claims, 1);

    d.start_worker("worker-2").await;
    let done = d.wait_for_state(&uuid.to_string(), &["Success", "Failed"]).await;
    assert_eq!(
        done["state"],
        "Success",
        "{done}\nworker-2:\n{}",
        d.logs("worker-2")
    );
    let a = store.get_action(Scope::All, uuid).await.unwrap().unwrap();
    assert_eq!(a.claims, 2, "ran once on each worker");
    let lines: Vec<String> = store
        .logs(uuid, None)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.log)
        .collect();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("sleeping")).count(),
        2,
        "{lines:?}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("done"), "{lines:?}");
}
