//! Faults done for real against the PostgreSQL + RabbitMQ deployment.

use crate::support::deployment::{log_lines, Backend, Deployment};
use reqwest::{Method, StatusCode};
use std::time::Duration;
use stevedore_core::store::Scope;
use uuid::Uuid;

/// A worker killed with SIGKILL mid-action does not leave the action In
/// progress: its lease expires, another worker's reaper re-queues it, and it
/// runs to Success on the other worker.
/// The fault tests run one at a time: each starts an API, workers,
/// PostgreSQL databases and RabbitMQ connections with second-scale leases,
/// and on a 2-core machine several at once starve each other's heartbeats.
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_survives_its_worker_being_killed() {
    let _serial = SERIAL.lock().await;
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
    let lines = log_lines(&store, &uuid.to_string()).await;
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("sleeping")).count(),
        2,
        "{lines:?}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("done"), "{lines:?}");
}

// ------------------------------------------------------------------------
// Faults with invariants: every action reaches exactly one final state, none
// is lost, no action ever runs twice at once.

use crate::support::marks::{check_marks, fault_config};
use crate::support::proxy::TcpProxy;
use crate::support::rabbit::close_rabbit_connections;
use std::collections::HashMap;
use std::sync::Arc;
use stevedore_core::state::ActionState;
use stevedore_core::store::ActionFilter;

/// How long every action gets to reach a final state once the faults stop.
const SETTLE_ALL: Duration = Duration::from_secs(90);

/// What the invariant check found.
#[derive(Debug, Default)]
struct Counts {
    actions: usize,
    success: usize,
    failed: usize,
    canceled: usize,
    duplicates: usize,
    stuck: usize,
}

/// Waits until every action in the database is final (or `SETTLE_ALL`
/// passes), then checks the invariants: every action the API accepted
/// exists; each has exactly one final-state event; marks never overlap.
async fn check_invariants(d: &Deployment, accepted: &[String], marks: &std::path::Path) -> Counts {
    let store = d.store().await;
    let filter = ActionFilter::default();
    let deadline = tokio::time::Instant::now() + SETTLE_ALL;
    let actions = loop {
        let page = store
            .list_actions(Scope::All, &filter, 1_000_000, 0)
            .await
            .unwrap();
        let open = page.items.iter().filter(|a| !a.state.is_final()).count();
        if open == 0 || tokio::time::Instant::now() > deadline {
            break page.items;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let by_uuid: HashMap<String, &stevedore_core::action::Action> =
        actions.iter().map(|a| (a.uuid.to_string(), a)).collect();
    for uuid in accepted {
        assert!(by_uuid.contains_key(uuid), "accepted action {uuid} was lost");
    }
    let events = store.events_after(Scope::All, 0, 10_000_000).await.unwrap();
    let mut finals: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        let is_final = e
            .state
            .parse::<ActionState>()
            .map(|s| s.is_final())
            .unwrap_or(false);
        if e.object_type == "action" && is_final {
            *finals.entry(e.uuid.as_str()).or_default() += 1;
        }
    }
    let mut c = Counts {
        actions: actions.len(),
        ..Counts::default()
    };
    let mut stuck = vec![];
    for a in &actions {
        match a.state {
            ActionState::Success => c.success += 1,
            ActionState::Failed => c.failed += 1,
            ActionState::Canceled => c.canceled += 1,
            _ => {
                c.stuck += 1;
                stuck.push(format!("{} {}", a.uuid, a.state));
            }
        }
        let n = finals.get(a.uuid.to_string().as_str()).copied().unwrap_or(0);
        if a.state.is_final() && n != 1 {
            c.duplicates += 1;
        }
        // A mark that succeeded said so in its log.
        if a.verb == "mark" && a.state == ActionState::Success {
            let log = store.logs(a.uuid, None).await.unwrap();
            assert!(
                log.iter().any(|l| l.log == "marked"),
                "{} succeeded without its output: {log:?}",
                a.uuid
            );
        }
    }
    check_marks(marks);
    assert!(
        stuck.is_empty(),
        "{} actions not final after {SETTLE_ALL:?}: {:?}\napi:\n{}\nworker-1:\n{}\nworker-2:\n{}\nworker-3:\n{}",
        stuck.len(),
        &stuck[..stuck.len().min(10)],
        tail(&d.logs("api")),
        tail(&d.logs("worker-1")),
        tail(&d.logs("worker-2")),
        tail(&d.logs("worker-3"))
    );
    assert_eq!(c.duplicates, 0, "actions with more than one final state");
    c
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Submits `total` mark actions round-robin over `services` from 8 tasks,
/// calling `fault` once a third of them were accepted.
async fn submit_marks<F, Fut>(d: &Arc<Deployment>, services: &[String], total: usize, fault: F) -> Vec<String>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = vec![];
    for _ in 0..8 {
        let (d, next, accepted, services) = (d.clone(), next.clone(), accepted.clone(), services.to_vec());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= total {
                    return;
                }
                if let Some(u) = d.try_submit(&services[i % services.len()], "mark", "{}").await {
                    accepted.lock().unwrap().push(u);
                }
            }
        }));
    }
    while next.load(std::sync::atomic::Ordering::SeqCst) < total / 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fault().await;
    for t in tasks {
        t.await.unwrap();
    }
    let v = accepted.lock().unwrap().clone();
    v
}

/// RabbitMQ closes the API's and the worker's connections (only this
/// deployment's, by name) while actions are being submitted, and again while
/// they run: publishes are retried by the outbox relay, the worker
/// reconnects, and every action ends exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_connections_closed_during_submission_and_execution() {
    let _serial = SERIAL.lock().await;
    let marks_dir = tempfile::tempdir().unwrap();
    let marks = marks_dir.path().join("marks");
    let d = Deployment::start_with(Backend::PostgresRabbit, &fault_config(&marks)).await;
    let prefix = d.prefix.clone().unwrap();
    let svcs = d.new_services(12).await;
    let d = Arc::new(d);
    let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (p, c) = (prefix.clone(), closed.clone());
    let accepted = submit_marks(&d, &svcs, 240, || async move {
        let n = close_rabbit_connections(&p, &["publish", "consume"]).await;
        c.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
    })
    .await;
    // And while they run.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = close_rabbit_connections(&prefix, &["publish", "consume"]).await;
    closed.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
    let closed = closed.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        closed >= 4,
        "only {closed} connections closed: is the naming right?"
    );
    assert_eq!(
        accepted.len(),
        240,
        "the API refused submissions while RabbitMQ reconnected"
    );
    let c = check_invariants(&d, &accepted, &marks).await;
    eprintln!("rabbitmq faults: closed {closed} connections; {c:?}");
    // 240 marks plus the 12 "Service Create" actions.
    assert_eq!((c.actions, c.success), (252, 252), "{c:?}");
}

/// PostgreSQL becomes unreachable (every connection cut, new ones refused)
/// for three seconds while actions are submitted, and again while they run.
/// Requests during the outage fail with an error; everything accepted ends
/// exactly once, and nothing runs twice at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_during_submission_and_execution() {
    let _serial = SERIAL.lock().await;
    let marks_dir = tempfile::tempdir().unwrap();
    let marks = marks_dir.path().join("marks");
    let pg = crate::support::proxy::db_addr(&stevedore_core::testing::admin_pg_url());
    let proxy = Arc::new(TcpProxy::start(pg).await);
    let d = Deployment::start_via_proxy(&fault_config(&marks), &proxy).await;
    let svcs = d.new_services(12).await;
    let d = Arc::new(d);
    let p = proxy.clone();
    let accepted = submit_marks(&d, &svcs, 240, || async move {
        p.cut();
        tokio::time::sleep(Duration::from_secs(3)).await;
        p.resume();
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.resume();
    // The API recovered: submissions are accepted again.
    let mut accepted = accepted;
    let before = accepted.len();
    for i in 0..24 {
        let u = d.try_submit(&svcs[i % svcs.len()], "mark", "{}").await;
        accepted.push(u.expect("a submission after the outage was refused"));
    }
    let c = check_invariants(&d, &accepted, &marks).await;
    eprintln!(
        "postgres faults: {before} of 240 submissions accepted during the outages, then 24 of 24; {c:?}"
    );
    // At least those submitted before the first outage.
    assert!(before >= 240 / 4, "too few accepted: {before}");
    assert_eq!(c.success, c.actions, "{c:?}");
}

/// A cancel whose control message never arrives is still noticed: the
/// heartbeat reads the state back and stops the handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_is_noticed_by_the_heartbeat_without_its_control_message() {
    let _serial = SERIAL.lock().await;
    let marks_dir = tempfile::tempdir().unwrap();
    let d = Deployment::start_with(
        Backend::PostgresRabbit,
        &fault_config(&marks_dir.path().join("m")),
    )
    .await;
    let svc = d.new_service().await;
    let uuid = d.try_submit(&svc, "sleep", r#"{"seconds": 30}"#).await.unwrap();
    let id = Uuid::parse_str(&uuid).unwrap();
    let store = d.store().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.logs(id, None).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Canceling written straight to the database: no control message.
    store
        .transition(Scope::All, id, ActionState::Canceling, None)
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let done = d.wait_for_state(&uuid, &["Canceled", "Success", "Failed"]).await;
    assert_eq!(done["state"], "Canceled", "{done}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// SIGTERM: the worker waits `shutdown_deadline` (2 s here), then stops
/// what still runs and hands it back at once; another worker picks it up
/// well before the 8 s lease would have expired, and runs it to Success. The
/// first worker exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_running_actions_back_to_another_worker() {
    let _serial = SERIAL.lock().await;
    let marks_dir = tempfile::tempdir().unwrap();
    let mut d = Deployment::start_with(
        Backend::PostgresRabbit,
        &fault_config(&marks_dir.path().join("m")),
    )
    .await;
    let svc = d.new_service().await;
    let uuid = d.try_submit(&svc, "sleep", r#"{"seconds": 4}"#).await.unwrap();
    let id = Uuid::parse_str(&uuid).unwrap();
    let store = d.store().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.logs(id, None).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let term = tokio::time::Instant::now();
    let st = tokio::process::Command::new("kill")
        .args(["-TERM", &d.pid(1).to_string()])
        .status()
        .await
        .unwrap();
    assert!(st.success());
    d.start_worker("worker-2").await;
    let exit = d.wait_exit(1, Duration::from_secs(15)).await;
    let exited_after = term.elapsed();
    let exit = exit.unwrap_or_else(|| panic!("worker-1 did not exit:\n{}", d.logs("worker-1")));
    assert!(exit.success(), "{exit:?}\n{}", d.logs("worker-1"));
    // Deadline 2 s + kill grace 1 s + hand-back, well under the lease.
    assert!(exited_after < Duration::from_secs(8), "{exited_after:?}");

    // Claimed again well before the lease (8 s) could have expired.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let a = store.get_action(Scope::All, id).await.unwrap().unwrap();
        if a.claims >= 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never claimed again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reclaimed_after = term.elapsed();
    assert!(
        reclaimed_after < Duration::from_secs(7),
        "re-claimed after {reclaimed_after:?}: waited for the lease instead of the hand-back"
    );
    let done = d.wait_for_state(&uuid, &["Success", "Failed", "Canceled"]).await;
    assert_eq!(done["state"], "Success", "{done}\n{}", d.logs("worker-2"));
    let lines = log_lines(&store, &uuid).await;
    assert!(
        lines.iter().any(|l| l.contains("handing the action back")),
        "{lines:?}"
    );
    eprintln!("sigterm: worker-1 exited after {exited_after:?}; re-claimed after {reclaimed_after:?}");
}

/// A bounded soak: for `STEVEDORE_SOAK_SECS` seconds (20 by default), eight
/// clients submit `noop`, short `sleep` and `mark` actions on 40 services to
/// two workers, cancel about one in ten at random, while one worker is
/// killed (SIGKILL) and another started. Then every action must end exactly
/// once, none may be lost or stuck, and no mark may overlap itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_cancels_and_a_worker_killed() {
    let _serial = SERIAL.lock().await;
    let secs: u64 = std::env::var("STEVEDORE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let run_for = Duration::from_secs(secs);
    let marks_dir = tempfile::tempdir().unwrap();
    let marks = marks_dir.path().join("marks");
    let mut d = Deployment::start_with(Backend::PostgresRabbit, &fault_config(&marks)).await;
    d.start_worker("worker-2").await;
    let svcs = d.new_services(40).await;
    let client = d.client();
    let d = Arc::new(tokio::sync::Mutex::new(d));
    let end = tokio::time::Instant::now() + run_for;
    let accepted = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let cancels = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = vec![];
    for _ in 0..8 {
        let (client, accepted, cancels, svcs) =
            (client.clone(), accepted.clone(), cancels.clone(), svcs.clone());
        tasks.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < end {
                let r = Uuid::new_v4().as_u128();
                let svc = &svcs[(r % svcs.len() as u128) as usize];
                let (verb, body) = match (r >> 8) % 10 {
                    0 | 1 => ("sleep", r#"{"seconds": 0.05}"#),
                    2 | 3 => ("mark", "{}"),
                    _ => ("noop", "{}"),
                };
                let Some(uuid) = client.try_submit(svc, verb, body).await else {
                    continue;
                };
                if (r >> 16).is_multiple_of(10) {
                    client.cancel(&uuid).await;
                    cancels.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                accepted.lock().unwrap().push(uuid);
            }
        }));
    }
    // One worker dies mid-run; another joins.
    tokio::time::sleep(run_for / 3).await;
    d.lock().await.kill(1).await;
    tokio::time::sleep(run_for / 6).await;
    d.lock().await.start_worker("worker-3").await;
    for t in tasks {
        t.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    let settle_from = tokio::time::Instant::now();
    let g = d.lock().await;
    let c = check_invariants(&g, &accepted, &marks).await;
    let runs = check_marks(&marks);
    eprintln!(
        "soak {secs}s: submitted {}, cancel requests {}, success {}, failed {}, canceled {}, duplicates {}, stuck {}, marks run {} (settled in {:?})",
        accepted.len(),
        cancels.load(std::sync::atomic::Ordering::Relaxed),
        c.success,
        c.failed,
        c.canceled,
        c.duplicates,
        c.stuck,
        runs.values().sum::<usize>(),
        settle_from.elapsed(),
    );
    assert!(accepted.len() >= 100, "only {} submitted", accepted.len());
    assert_eq!(c.failed, 0, "{c:?}");
    assert_eq!(c.duplicates + c.stuck, 0, "{c:?}");
}
