//! What operators' scripts and real outages do, done for real through the
//! binary: commands that fork, escape their process group, hang or flood
//! their output; a database unreachable past the queue's delivery limit; a
//! broker that stalls or blocks publishers; a worker pool stopped with a
//! backlog. Nothing stuck, nothing failed that never ran.

use crate::support::amqp_proxy::AmqpProxy;
use crate::support::deployment::{log_lines, Backend, Deployment};
use crate::support::http::get_text;
use crate::support::marks::{check_marks, fault_config};
use crate::support::proxy::TcpProxy;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;
use stevedore_core::state::ActionState;
use stevedore_core::store::Scope;
use uuid::Uuid;

// --- commands that fork, hang and flood --------------------------------------

/// Operations that start a daemon the way deploy scripts do, escape their
/// process group, hang, and flood their output. The escaped `sleep`s outlive
/// their action on purpose; they print `escaped <pid>`, and the test ends
/// them ([`end_escaped`]).
const COMMANDS_CONFIG: &str = r#"
[worker]
concurrency = 8
lease = "3s"
heartbeat = "1s"
kill_grace = "1s"
output_drain = "1s"
max_log_bytes = 20000

[[operation]]
object = "service"
verb = "daemon"
exec = ["sh", "-c", "sleep 600 & echo started"]
timeout = "60s"

[[operation]]
object = "service"
verb = "escape"
exec = ["sh", "-c", "setsid sh -c 'echo \"escaped $$\"; exec sleep 20' & sleep 0.5; echo started"]
timeout = "60s"

[[operation]]
object = "service"
verb = "hang"
exec = ["sh", "-c", "setsid sh -c 'echo \"escaped $$\"; exec sleep 20' & sleep 0.5; sleep 600"]
timeout = "2s"

[[operation]]
object = "service"
verb = "wait"
exec = ["sh", "-c", "echo waiting; sleep 600 & sleep 600"]
timeout = "60s"

[[operation]]
object = "service"
verb = "flood"
exec = ["sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo \"line $i of a flood of output\"; i=$((i+1)); done"]

[[operation]]
object = "service"
verb = "noop"
handler = "noop"
"#;

/// Kills the processes an action's command left outside its process group
/// (its `escaped <pid>` lines), so the test leaves nothing running.
fn end_escaped(lines: &[String]) -> usize {
    let pids: Vec<i32> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("escaped ")?.trim().parse().ok())
        .collect();
    for &pid in &pids {
        // SAFETY: kill(2) with a pid the command printed; no memory involved.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    pids.len()
}

async fn commands_that_fork_hang_or_flood_never_hold_an_action_open(d: &mut Deployment) {
    let store = d.store().await;
    let svc = d.new_service().await;
    // A command that starts a daemon: its exit status is the outcome, and
    // the service is free for the next action.
    let daemon = d.submit(&svc, "daemon", Some("{}")).await;
    let next = d.submit(&svc, "noop", Some("{}")).await;
    d.wait_for_state(&daemon, &["Success"]).await;
    d.wait_for_state(&next, &["Success"]).await;
    let lines = log_lines(&store, &daemon).await;
    assert!(lines.iter().any(|l| l == "started"), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("SIGTERM")), "{lines:?}");

    // A child that left the process group does not keep the action open.
    let escape = d.submit(&svc, "escape", Some("{}")).await;
    d.wait_for_state(&escape, &["Success"]).await;
    let lines = log_lines(&store, &escape).await;
    assert_eq!(end_escaped(&lines), 1, "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("no longer collected")),
        "{lines:?}"
    );

    // The timeout holds even with an escaped child holding the pipes.
    let hang = d.submit(&svc, "hang", Some("{}")).await;
    d.wait_for_state(&hang, &["Failed"]).await;
    let lines = log_lines(&store, &hang).await;
    assert_eq!(end_escaped(&lines), 1, "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("timed out after 2s")),
        "{lines:?}"
    );

    // A cancel of a command with a child in the background ends Canceled.
    let wait = d.submit(&svc, "wait", Some("{}")).await;
    let deadline = tokio::time::Instant::now() + crate::support::deployment::SETTLE;
    while !log_lines(&store, &wait).await.iter().any(|l| l == "waiting") {
        assert!(tokio::time::Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _, json) = d
        .request(
            Method::POST,
            &format!("/api/audit/v1/action/{wait}/cancel/"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    d.wait_for_state(&wait, &["Canceled"]).await;

    // A flood is stored up to the cap, with a closing line saying how much
    // was dropped.
    let flood = d.submit(&svc, "flood", Some("{}")).await;
    d.wait_for_state(&flood, &["Success"]).await;
    let lines = log_lines(&store, &flood).await;
    let stored: usize = lines
        .iter()
        .filter(|l| l.starts_with("line "))
        .map(|l| l.len())
        .sum();
    assert!(stored <= 20_000, "{stored} bytes stored past the 20000-byte cap");
    assert!(stored > 15_000, "only {stored} bytes stored");
    let last = lines.last().unwrap();
    assert!(
        last.contains("were dropped past the log limit of 20000 bytes"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_sqlite_and_the_in_process_broker() {
    let mut d = Deployment::start_with(Backend::Embedded, COMMANDS_CONFIG).await;
    commands_that_fork_hang_or_flood_never_hold_an_action_open(&mut d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_postgres_and_rabbitmq() {
    let mut d = Deployment::start_with(Backend::PostgresRabbit, COMMANDS_CONFIG).await;
    commands_that_fork_hang_or_flood_never_hold_an_action_open(&mut d).await;
}

// --- a database unreachable past the delivery limit ----------------------------

/// How long the database stays unreachable: with a 1 s acquire timeout,
/// handing a job back after each failed claim (as workers did) passes the
/// queue's delivery limit of 20 in about 40 s.
const OUTAGE: Duration = Duration::from_secs(60);

/// The fault config with a 1 s acquire timeout, and `extra` worker keys.
fn outage_config(marks: &std::path::Path, extra: &str) -> String {
    fault_config(marks).replace(
        "[worker]\n",
        &format!("[database]\nacquire_timeout = \"1s\"\n\n[worker]\n{extra}"),
    )
}

/// Submits `n` `mark` actions on `n` services (all accepted) and returns them.
async fn submit_marks(d: &Deployment, n: usize) -> Vec<String> {
    let mut accepted = vec![];
    for svc in d.new_services(n).await {
        accepted.push(d.submit(&svc, "mark", Some("{}")).await);
    }
    accepted
}

/// Waits for every action to be final; returns how many ended in each state.
async fn settle(
    d: &Deployment,
    uuids: &[String],
    limit: Duration,
) -> std::collections::BTreeMap<String, usize> {
    let store = d.store().await;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut states = std::collections::BTreeMap::new();
        for u in uuids {
            let a = store
                .get_action(Scope::All, u.parse::<Uuid>().unwrap())
                .await
                .unwrap()
                .unwrap();
            *states.entry(a.state.as_str().to_string()).or_insert(0) += 1;
        }
        let open = uuids.len()
            - states
                .iter()
                .filter(|(s, _)| s.parse::<ActionState>().map(|s| s.is_final()).unwrap_or(false))
                .map(|(_, n)| n)
                .sum::<usize>();
        if open == 0 || tokio::time::Instant::now() > deadline {
            return states;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Actions queued while the database is unreachable from the workers for
/// longer than the old delivery limit allowed: the worker holds their
/// messages and says so on /readyz (503, `jobs_held`), and once the database
/// is back every action runs exactly once and ends Success — none Failed
/// without having run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_past_the_delivery_limit_fails_no_queued_action() {
    let marks_dir = tempfile::tempdir().unwrap();
    let marks = marks_dir.path().join("marks");
    let mut d = Deployment::start_with(Backend::PostgresRabbit, &outage_config(&marks, "")).await;
    d.kill(1).await; // the deployment's own worker: the workers below reach the database through the proxy
    let pg = crate::support::proxy::db_addr(&stevedore_core::testing::admin_pg_url());
    let proxy = TcpProxy::start(pg).await;
    let via = proxy.url_for(&d.db_url);
    let ops = d
        .start_worker_with_ops_via("worker-2", &via, &stevedore_core::testing::amqp_url())
        .await;
    proxy.cut();
    let accepted = submit_marks(&d, 40).await;

    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, _, body) = get_text(&format!("{ops}/readyz"), &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert!(
        ready["conditions"]["jobs_held"]
            .as_str()
            .is_some_and(|m| m.contains("holding")),
        "{body}"
    );
    tokio::time::sleep(OUTAGE - Duration::from_secs(5)).await;
    proxy.resume();

    let states = settle(&d, &accepted, Duration::from_secs(90)).await;
    assert_eq!(
        states.get("Success"),
        Some(&40),
        "{states:?}\n{}",
        d.logs("worker-2")
    );
    let runs = check_marks(&marks);
    assert_eq!(runs.len(), 40);
    assert!(runs.values().all(|n| *n == 1), "an action ran twice: {runs:?}");
    // Ready again once nothing is held (the readiness check is cached 1 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, body) = get_text(&format!("{ops}/readyz"), &[]).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{body}\n{}",
            d.logs("worker-2")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The same outage with a hold shorter than the outage: every held message
/// is handed back each second, passes the delivery limit and is
/// dead-lettered. The dead-letter consumer publishes each waiting action
/// again (it fails none), and all end Success once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_dead_lettered_in_an_outage_are_published_again_not_failed() {
    let marks_dir = tempfile::tempdir().unwrap();
    let marks = marks_dir.path().join("marks");
    let config = outage_config(&marks, "outage_hold = \"1s\"\n");
    let mut d = Deployment::start_with(Backend::PostgresRabbit, &config).await;
    d.kill(1).await;
    let pg = crate::support::proxy::db_addr(&stevedore_core::testing::admin_pg_url());
    let proxy = TcpProxy::start(pg).await;
    let via = proxy.url_for(&d.db_url);
    d.start_worker_with_ops_via("worker-2", &via, &stevedore_core::testing::amqp_url())
        .await;
    proxy.cut();
    let accepted = submit_marks(&d, 10).await;
    tokio::time::sleep(OUTAGE).await;
    proxy.resume();

    let states = settle(&d, &accepted, Duration::from_secs(90)).await;
    assert_eq!(
        states.get("Success"),
        Some(&10),
        "{states:?}\n{}",
        d.logs("worker-2")
    );
    let runs = check_marks(&marks);
    assert!(runs.values().all(|n| *n == 1), "an action ran twice: {runs:?}");
    let store = d.store().await;
    let mut republished = 0;
    for u in &accepted {
        if log_lines(&store, u)
            .await
            .iter()
            .any(|l| l.contains("dead-lettered"))
        {
            republished += 1;
        }
    }
    assert!(
        republished > 0,
        "no job reached the delivery limit: the outage was too short to test it"
    );
}

// --- a broker that stalls or blocks publishers ---------------------------------

/// An API whose RabbitMQ stops taking what it publishes — stalled (no word)
/// or blocked (`connection.blocked`, as in a memory alarm) — still answers
/// every submission 202 promptly (the stall costs one publish timeout, the
/// block nothing); /readyz reports the block and stays 200; once the broker
/// takes messages again, the relay delivers what was committed and every
/// action ends Success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_or_blocked_broker_hangs_no_request_and_loses_nothing() {
    let config = crate::support::deployment::TEST_CONFIG
        .replace("[worker]\n", "[broker]\npublish_timeout = \"2s\"\n\n[worker]\n");
    let mut d = Deployment::start_with(Backend::PostgresRabbit, &config).await;
    let rabbit = "127.0.0.1:5672".parse().unwrap();
    let proxy = AmqpProxy::start(rabbit).await;
    let amqp = proxy.url_for(&stevedore_core::testing::amqp_url());
    let db_url = d.db_url.clone();
    d.url = d.start_api_via("api-2", &db_url, &amqp).await;
    let svc = d.new_service().await;
    let first = d.submit(&svc, "noop", Some("{}")).await;
    d.wait_for_state(&first, &["Success"]).await;

    let mut accepted = vec![];
    for fault in ["stall", "block"] {
        match fault {
            "stall" => proxy.stall(),
            _ => proxy.block(),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for _ in 0..3 {
            let svc = d.new_service().await;
            let started = std::time::Instant::now();
            accepted.push(d.submit(&svc, "noop", Some("{}")).await);
            // Behaviour, not speed: a hung publish would take the client's
            // 30 s timeout; a bounded one ends after publish_timeout.
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{fault}: a submission waited {:?}",
                started.elapsed()
            );
        }
        if fault == "block" {
            let (status, _, body) = get_text(&format!("{}/readyz", d.url), &[]).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert!(body.contains("broker_blocked"), "{body}");
        }
        proxy.release();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let states = settle(&d, &accepted, Duration::from_secs(60)).await;
    assert_eq!(states.get("Success"), Some(&6), "{states:?}\n{}", d.logs("api-2"));
    let (_, _, body) = get_text(&format!("{}/readyz", d.url), &[]).await;
    assert!(!body.contains("broker_blocked"), "{body}");
}

// --- a stopped worker pool with a backlog --------------------------------------

/// With every worker stopped, a backlog stays one copy: the relay does not
/// publish unclaimed actions again while their messages wait in the queue,
/// however many redispatch periods pass. A worker started later runs each
/// action once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_pool_keeps_its_backlog_without_copies() {
    let marks_dir = tempfile::tempdir().unwrap();
    let marks = marks_dir.path().join("marks");
    let config = fault_config(&marks).replace("redispatch_after = \"15s\"", "redispatch_after = \"1s\"");
    let mut d = Deployment::start_with(Backend::PostgresRabbit, &config).await;
    d.kill(1).await;
    let accepted = submit_marks(&d, 30).await;
    let broker = stevedore_broker::amqp::AmqpBroker::connect(
        &stevedore_core::testing::amqp_url(),
        stevedore_core::broker::BrokerNames::new(d.prefix.clone().unwrap()),
    )
    .await
    .unwrap();
    let before = broker.jobs_depth().await.unwrap();
    assert!(before >= 1);
    // Ten redispatch periods (the relay passes every 2 s).
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        broker.jobs_depth().await.unwrap(),
        before,
        "the backlog was copied"
    );

    d.start_worker("worker-2").await;
    let states = settle(&d, &accepted, Duration::from_secs(60)).await;
    assert_eq!(states.get("Success"), Some(&30), "{states:?}");
    let runs = check_marks(&marks);
    assert!(runs.values().all(|n| *n == 1), "{runs:?}");
}
