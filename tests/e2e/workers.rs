//! The workers registry through the real binary: every worker registers and
//! heartbeats with its running actions, `GET /api/v1/worker/` lists the live
//! ones to admins only, `stevedore worker ls` shows them, and a worker killed
//! with SIGKILL leaves the list once its registry lease passes.

use crate::support::deployment::{assert_help, bin, exports, Backend, Deployment, SETTLE, TEST_CONFIG};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;
use tokio::process::Command;

const WORKERS: &str = "/api/v1/worker/";

/// The test config with a short registry heartbeat and lease, so a dead
/// worker leaves the list within seconds.
fn registry_config() -> String {
    TEST_CONFIG.replacen(
        "[worker]\n",
        "[worker]\nregistry_heartbeat = \"300ms\"\nregistry_lease = \"2s\"\n",
        1,
    )
}

/// Makes the deployment's user an admin (`stevedore dev`'s bootstrap user
/// already is one).
async fn make_admin(d: &Deployment) {
    if d.backend == Backend::PostgresRabbit {
        let (ok, _, err) = d.admin(&["user", "grant-admin", &d.user]).await;
        assert!(ok, "grant-admin: {err}");
    }
    let (status, _, who) = d.request(Method::GET, "/api/v1/auth/", None).await;
    assert_eq!(status, StatusCode::OK, "{who}");
    assert_eq!(who["admin"], true, "{who}");
}

/// The live workers, as the deployment's user sees them.
async fn workers(d: &Deployment) -> Vec<Value> {
    let (status, _, page) = d.request(Method::GET, WORKERS, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        page["meta"]["total_count"].as_u64(),
        page["objects"].as_array().map(|a| a.len() as u64)
    );
    page["objects"].as_array().unwrap().clone()
}

/// Polls the list until `done` holds for it; the list then.
async fn workers_until(d: &Deployment, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let list = workers(d).await;
        if done(&list) {
            return list;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: still {list:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ids(list: &[Value]) -> HashSet<String> {
    list.iter()
        .map(|w| w["id"].as_str().unwrap().to_string())
        .collect()
}

/// The worker processes of the deployment: the dev process, or (PostgreSQL
/// + RabbitMQ) worker-1 and a second one started here. Their pids.
async fn worker_pids(d: &mut Deployment) -> HashSet<i64> {
    match d.backend {
        Backend::Embedded => HashSet::from([i64::from(d.pid(0))]),
        Backend::PostgresRabbit => {
            let second = d.start_worker("worker-2").await;
            HashSet::from([i64::from(d.pid(1)), i64::from(d.pid(second))])
        }
    }
}

async fn workers_list_their_fields_and_running_actions(d: &mut Deployment) {
    make_admin(d).await;
    let pids = worker_pids(d).await;
    let list = workers_until(d, "every worker registers", |l| l.len() == pids.len()).await;
    let listed: HashSet<i64> = list.iter().map(|w| w["pid"].as_i64().unwrap()).collect();
    assert_eq!(listed, pids, "{list:#?}");
    for w in &list {
        let id = w["id"].as_str().unwrap();
        assert!(
            id.contains(&format!(":{}:", w["pid"])),
            "the id is host:pid:random: {w}"
        );
        assert_eq!(w["resource_uri"], format!("{WORKERS}{id}/"));
        assert!(!w["host"].as_str().unwrap().is_empty(), "{w}");
        assert_eq!(w["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(w["concurrency"], 8, "[worker] concurrency of the test config");
        assert_eq!(w["running_actions"], serde_json::json!([]), "{w}");
        for date in ["started", "last_heartbeat", "expires"] {
            let text = w[date].as_str().unwrap();
            assert!(text.ends_with(" +0000"), "{date}: {text}");
            chrono::DateTime::parse_from_rfc2822(text).unwrap_or_else(|e| panic!("{date} {text}: {e}"));
        }
    }

    // A running action shows in its worker's entry, and leaves it when done.
    let svc = d.new_service().await;
    let uuid = d.submit(&svc, "sleep", Some(r#"{"seconds": 3}"#)).await;
    let running = |l: &[Value]| {
        l.iter()
            .filter(|w| {
                w["running_actions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a == &uuid)
            })
            .count()
    };
    let list = workers_until(d, "the action shows as running", |l| running(l) == 1).await;
    let metrics = scrape(d).await;
    assert_eq!(
        gauge(&metrics, "stevedore_workers_live"),
        Some(pids.len() as f64),
        "{metrics}"
    );
    assert!(
        gauge(&metrics, "stevedore_workers_running_actions") >= Some(1.0),
        "{metrics}"
    );
    let runner = list
        .iter()
        .find(|w| running(std::slice::from_ref(w)) == 1)
        .unwrap();
    assert_eq!(runner["running_actions"].as_array().unwrap().len(), 1, "{runner}");
    d.wait_for_state(&uuid, &["Success"]).await;
    workers_until(d, "the finished action leaves the list", |l| {
        running(l) == 0 && l.len() == pids.len()
    })
    .await;

    // Paging: the Tastypie envelope.
    if pids.len() == 2 {
        let (status, _, page) = d
            .request(Method::GET, &format!("{WORKERS}?limit=1&offset=1"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["meta"]["total_count"], 2);
        assert_eq!(page["meta"]["limit"], 1);
        assert_eq!(page["objects"].as_array().unwrap().len(), 1);
        assert!(page["meta"]["next"].is_null());
        assert!(page["meta"]["previous"].is_string());
    }
}

/// The API's `/metrics` text.
async fn scrape(d: &Deployment) -> String {
    reqwest::get(format!("{}/metrics", d.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of an unlabelled sample.
fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

async fn a_killed_worker_leaves_the_list_within_its_lease(d: &mut Deployment) {
    make_admin(d).await;
    let pids = worker_pids(d).await;
    let before = workers_until(d, "every worker registers", |l| l.len() == pids.len()).await;
    // Kill -9 one worker process: the embedded one is the dev server itself,
    // started again on the same data so that someone can look.
    let (killed_pid, survivor_wanted) = match d.backend {
        Backend::Embedded => {
            let pid = i64::from(d.pid(0));
            d.kill(0).await;
            d.restart_dev().await;
            make_admin(d).await;
            (pid, 1)
        }
        Backend::PostgresRabbit => {
            let pid = i64::from(d.pid(2));
            d.kill(2).await;
            (pid, 1)
        }
    };
    let killed: String = before
        .iter()
        .find(|w| w["pid"].as_i64() == Some(killed_pid))
        .map(|w| w["id"].as_str().unwrap().to_string())
        .unwrap();
    let after = workers_until(d, "the killed worker leaves the list", |l| {
        !ids(l).contains(&killed) && l.len() == survivor_wanted
    })
    .await;
    assert!(
        after.iter().all(|w| w["pid"].as_i64() != Some(killed_pid)),
        "{after:#?}"
    );
    // The store holds no live row for it either.
    let store = d.store().await;
    assert!(store.live_worker(&killed).await.unwrap().is_none());
}

async fn only_admins_list_workers(d: &mut Deployment) {
    make_admin(d).await;
    // No credentials: 401, JSON.
    let (status, _, body) = d.request_as(None, Method::GET, WORKERS, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["error"].is_string(), "{body}");
    // A user who is no admin: 403 with a message that says why.
    let (ok, out, err) = d.admin(&["user", "create", "bob"]).await;
    assert!(ok, "{err}");
    let bob = exports(&out);
    let bob = (bob["STEVEDORE_USER"].as_str(), bob["STEVEDORE_APIKEY"].as_str());
    let (status, _, body) = d.request_as(Some(bob), Method::GET, WORKERS, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"].as_str().unwrap().contains("not an admin"), "{body}");
    let (_, _, who) = d.request_as(Some(bob), Method::GET, "/api/v1/auth/", None).await;
    assert_eq!(who["admin"], false, "{who}");
    // Bad input: 400, JSON.
    for bad in ["?limit=x", "?offset=-1", "?state=Running"] {
        let (status, _, body) = d.request(Method::GET, &format!("{WORKERS}{bad}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    // Granted and revoked: effective although bob's and the admin's
    // credentials were cached by the API — at once on the embedded store
    // (every cache hit reads the credential revision), once the control
    // message arrives on RabbitMQ (milliseconds, not synchronised with the
    // command's exit; see api/src/revocation.rs).
    let (ok, _, err) = d.admin(&["user", "grant-admin", "bob"]).await;
    assert!(ok, "{err}");
    workers_answer(d, bob, StatusCode::OK).await;
    let (ok, _, err) = d.admin(&["user", "revoke-admin", "bob"]).await;
    assert!(ok, "{err}");
    workers_answer(d, bob, StatusCode::FORBIDDEN).await;
    let (ok, _, err) = d.admin(&["user", "grant-admin", "nobody"]).await;
    assert!(!ok && err.contains("no user named"), "{err}");
}

/// `stevedore worker ls` as `(user, key)`: exit status, stdout, stderr.
/// Waits until the workers list answers `who` with `want` (the change of an
/// admin flag reaching the API); panics after 10 s.
async fn workers_answer(d: &Deployment, who: (&str, &str), want: StatusCode) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = d.request_as(Some(who), Method::GET, WORKERS, None).await;
        if status == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} still gets {status}, not {want}: {body}",
            who.0
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn worker_ls(d: &Deployment, auth: (&str, &str), args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin())
        .args(["worker", "ls"])
        .args(args)
        .env_remove("STEVEDORE_DATABASE_URL")
        .env("STEVEDORE_URL", &d.url)
        .env("STEVEDORE_USER", auth.0)
        .env("STEVEDORE_APIKEY", auth.1)
        .env("STEVEDORE_CREDENTIALS", d.dir.path().join("none.toml"))
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("run stevedore worker ls");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn the_cli_lists_workers(d: &mut Deployment) {
    make_admin(d).await;
    let pids = worker_pids(d).await;
    let list = workers_until(d, "every worker registers", |l| l.len() == pids.len()).await;
    let admin = (d.user.clone(), d.key.clone());
    let (code, out, err) = worker_ls(d, (&admin.0, &admin.1), &[]).await;
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("HEARTBEAT"),
        "{out}"
    );
    assert_eq!(lines.len(), 1 + pids.len(), "{out}");
    for w in &list {
        let id = w["id"].as_str().unwrap();
        assert!(
            lines.iter().any(|l| l.starts_with(id) && l.contains(" 0/8 ")),
            "{id}: {out}"
        );
    }
    let (code, out, err) = worker_ls(d, (&admin.0, &admin.1), &["--json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let json: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(ids(&json), ids(&list));
    // A user who is no admin is told so, with the client's error status.
    let (ok, out, err) = d.admin(&["user", "create", "carol"]).await;
    assert!(ok, "{err}");
    let carol = exports(&out);
    let (code, out, err) = worker_ls(d, (&carol["STEVEDORE_USER"], &carol["STEVEDORE_APIKEY"]), &[]).await;
    assert_eq!(code, Some(3), "{out}");
    assert!(err.contains("not an admin"), "{err}");
}

on_both_backends!(config = registry_config;
    workers_list_their_fields_and_running_actions,
    a_killed_worker_leaves_the_list_within_its_lease,
    only_admins_list_workers,
    the_cli_lists_workers,
);

#[tokio::test]
async fn the_worker_and_admin_commands_have_help() {
    for (args, says) in [
        (&["worker", "--help"][..], "worker ls"),
        (&["worker", "ls", "--help"][..], "--json"),
        (&["user", "create", "--help"][..], "--admin"),
        (
            &["user", "grant-admin", "--help"][..],
            "Usage: stevedore user grant-admin",
        ),
        (
            &["user", "revoke-admin", "--help"][..],
            "Usage: stevedore user revoke-admin",
        ),
    ] {
        assert_help(args, says).await;
    }
}

/// Stopping gracefully, with a config of its own.
mod stopping {
    use super::*;

    /// A stopped worker (SIGTERM) removes its entry when it exits: with a
    /// registry lease of a minute, longer than the test waits, only the
    /// deregistration can take it off the list.
    async fn a_stopped_worker_leaves_the_list_at_once(backend: Backend) {
        let config = TEST_CONFIG.replacen(
            "[worker]\n",
            "[worker]\nregistry_heartbeat = \"300ms\"\nregistry_lease = \"60s\"\n",
            1,
        );
        let mut d = Deployment::start_with(backend, &config).await;
        make_admin(&d).await;
        let pids = worker_pids(&mut d).await;
        let before = workers_until(&d, "every worker registers", |l| l.len() == pids.len()).await;
        let index = match backend {
            Backend::Embedded => 0,
            Backend::PostgresRabbit => 2,
        };
        let pid = d.pid(index);
        let stopped: String = before
            .iter()
            .find(|w| w["pid"].as_i64() == Some(i64::from(pid)))
            .map(|w| w["id"].as_str().unwrap().to_string())
            .unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .unwrap();
        assert!(status.success());
        let exited = d.wait_exit(index, SETTLE).await;
        assert!(exited.is_some(), "the process did not exit after SIGTERM");
        if backend == Backend::Embedded {
            d.restart_dev().await;
            make_admin(&d).await;
        }
        let after = workers_until(&d, "the survivor is listed", |l| l.len() == 1).await;
        assert!(!ids(&after).contains(&stopped), "{after:#?}");
        let store = d.store().await;
        assert!(store.live_worker(&stopped).await.unwrap().is_none());
    }

    on_both_backends!(backend; a_stopped_worker_leaves_the_list_at_once);
}
