//! Action progress end to end: an `exec` command prints `::progress` lines
//! and the action's JSON, the events stream, the logs stream and `stevedore
//! action logs -f` show them, on `stevedore dev` and on PostgreSQL +
//! RabbitMQ.
//!
//! The command waits for a gate file between its reports, so the test sees
//! each one without assuming how long anything takes.

use crate::support::deployment::{bin, Deployment, SETTLE, TEST_CONFIG};
use crate::support::ws::{ws_connect, ws_json, ws_next, ws_until_close, WsNext};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

fn config() -> String {
    TEST_CONFIG.to_string()
        + r#"
[[operation]]
object = "service"
verb = "deploy"
exec = ["sh", "-c", """
echo starting
echo '::progress 42 Copying layers'
echo '::progress 150 not a report'
i=0
while [ ! -e "${TMPDIR:-/tmp}/stevedore-e2e-gate-$STEVEDORE_ACTION_UUID" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
echo '::progress 80% Extracting'
echo finished
"""]
"#
}

on_both_backends!(
    config = config;
    an_exec_commands_progress_reaches_the_action_the_streams_and_the_cli,
    run_wait_shows_the_progress_of_a_builtin_handler,
);

/// The gate the `deploy` command waits for.
fn gate(uuid: &str) -> PathBuf {
    std::env::temp_dir().join(format!("stevedore-e2e-gate-{uuid}"))
}

/// Polls the action until `check` holds for its JSON.
async fn wait_for(d: &Deployment, uuid: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let (status, _, json) = d
            .request(Method::GET, &format!("/api/audit/v1/action/{uuid}/"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        if check(&json) {
            return json;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "action {uuid} never showed {what}: {json}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn an_exec_commands_progress_reaches_the_action_the_streams_and_the_cli(d: &mut Deployment) {
    let stream = d.stream_url().await;
    let (user, key) = (d.user.clone(), d.key.clone());
    let auth = Some((user.as_str(), key.as_str()));
    let mut events = ws_connect(&stream, "/api/audit/v1/events", auth).await.unwrap();
    let hello = ws_json(&mut events).await;
    let start_seq = hello["data"]["seq"].as_i64().unwrap();

    let svc = d.new_service().await;
    let accepted = d.submit_action(&svc, "deploy", None).await;
    let uuid = accepted["uuid"].as_str().unwrap().to_string();
    let _gate = GateFile(gate(&uuid));
    // A new action has no progress yet.
    assert_eq!(accepted["progress"], Value::Null, "{accepted}");
    assert_eq!(accepted["progress_message"], "");

    // The CLI follows the logs from the start (stdout and stderr are pipes:
    // plain progress lines).
    let cli = tokio::process::Command::new(bin())
        .args(["action", "logs", "-f", &uuid])
        .env_remove("STEVEDORE_DATABASE_URL")
        .env("STEVEDORE_URL", &d.url)
        .env("STEVEDORE_STREAM_URL", &stream)
        .env("STEVEDORE_USER", &user)
        .env("STEVEDORE_APIKEY", &key)
        .env("STEVEDORE_CREDENTIALS", d.dir.path().join("no-credentials.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start stevedore action logs -f");

    // The action JSON shows the report the command made before it waits.
    let running = wait_for(d, &uuid, "progress 42", |a| a["progress"] == 42).await;
    assert_eq!(running["state"], "In progress");
    assert_eq!(running["progress_message"], "Copying layers");

    // A logs socket opened now gets the current progress first.
    let mut logs = ws_connect(&stream, &format!("/api/audit/v1/action/{uuid}/logs/"), auth)
        .await
        .unwrap();
    let backlog = frames_until(&mut logs, |f| f["type"] == "progress").await;
    let first = backlog.last().unwrap();
    assert_eq!(
        (first["progress"].as_u64(), first["progress_message"].as_str()),
        (Some(42), Some("Copying layers"))
    );

    // Let the command go on; it reports 80 and ends.
    std::fs::write(gate(&uuid), b"go").unwrap();
    let done = d.wait_for_state(&uuid, &["Success"]).await;
    // A final state keeps the last report.
    assert_eq!(
        (done["progress"].as_u64(), done["progress_message"].as_str()),
        (Some(80), Some("Extracting"))
    );

    // The logs socket: the live report, then the rest of the lines, then close.
    let (rest, code) = ws_until_close(&mut logs).await;
    assert_eq!(code, 1000);
    let all: Vec<&Value> = backlog.iter().chain(rest.iter()).collect();
    let reports: Vec<(u64, &str)> = all
        .iter()
        .filter(|f| f["type"] == "progress")
        .map(|f| {
            (
                f["progress"].as_u64().unwrap(),
                f["progress_message"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(reports.last(), Some(&(80, "Extracting")), "{all:?}");
    let lines: Vec<&str> = all
        .iter()
        .filter(|f| f["type"] == "log")
        .map(|f| f["log"].as_str().unwrap())
        .collect();
    // Reports are not log lines; a malformed reserved line is.
    assert_eq!(
        lines,
        ["starting", "::progress 150 not a report", "finished"],
        "{all:?}"
    );

    // The events socket: progress events of the action, between its
    // create and its final update, without a seq.
    let mut mine = vec![];
    loop {
        let f = match ws_next(&mut events, SETTLE).await {
            WsNext::Json(f) => f,
            other => panic!("events socket: {other:?} before the final update"),
        };
        if f["uuid"] != uuid.as_str() {
            continue;
        }
        let last = f["action"] == "update" && f["state"] == "Success";
        mine.push(f);
        if last {
            break;
        }
    }
    let progress: Vec<&Value> = mine.iter().filter(|f| f["action"] == "progress").collect();
    assert!(!progress.is_empty(), "no progress event: {mine:?}");
    for p in &progress {
        assert_eq!(p["type"], "action");
        assert!(p.get("seq").is_none(), "{p}");
        assert_eq!(p["resource_uri"], format!("/api/audit/v1/action/{uuid}/"));
        assert!(p["parents"][0].as_str().unwrap().contains(&svc), "{p}");
    }
    let last = progress.last().unwrap();
    assert_eq!(
        (last["progress"].as_u64(), last["progress_message"].as_str()),
        (Some(80), Some("Extracting"))
    );
    assert!(progress
        .iter()
        .any(|p| p["progress"] == 42 && p["progress_message"] == "Copying layers"));

    // Resuming with ?since= replays stored events only: no progress.
    let mut resumed = ws_connect(&stream, &format!("/api/audit/v1/events?since={start_seq}"), auth)
        .await
        .unwrap();
    assert_eq!(ws_json(&mut resumed).await["type"], "auth");
    let replayed = frames_until(&mut resumed, |f| {
        f["uuid"] == uuid.as_str() && f["action"] == "update" && f["state"] == "Success"
    })
    .await;
    assert!(replayed.iter().all(|f| f["action"] != "progress"), "{replayed:?}");
    assert!(replayed.iter().all(|f| f["seq"].is_i64()));

    // The CLI printed the lines on stdout and the reports on stderr.
    let out = tokio::time::timeout(SETTLE, cli.wait_with_output())
        .await
        .expect("action logs -f did not end with the action")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["starting", "::progress 150 not a report", "finished"],
        "{stderr}"
    );
    assert!(stderr.contains("progress 42% Copying layers"), "{stderr}");
    assert!(stderr.contains("progress 80% Extracting"), "{stderr}");
}

/// `stevedore run … --wait` on the built-in `sleep`, which reports the
/// share of its time slept: plain progress lines (no terminal), and the
/// final JSON at 100.
async fn run_wait_shows_the_progress_of_a_builtin_handler(d: &mut Deployment) {
    let stream = d.stream_url().await;
    let svc = d.new_service().await;
    let out = tokio::time::timeout(
        SETTLE,
        tokio::process::Command::new(bin())
            .args([
                "run",
                "service",
                &svc,
                "sleep",
                "--body",
                r#"{"seconds": 3}"#,
                "--wait",
            ])
            .env_remove("STEVEDORE_DATABASE_URL")
            .env("STEVEDORE_URL", &d.url)
            .env("STEVEDORE_STREAM_URL", &stream)
            .env("STEVEDORE_USER", &d.user)
            .env("STEVEDORE_APIKEY", &d.key)
            .env("STEVEDORE_CREDENTIALS", d.dir.path().join("no-credentials.toml"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run --wait did not end")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let uuid = stdout.lines().next().unwrap().trim().to_string();
    let reports: Vec<&str> = stderr.lines().filter(|l| l.starts_with("progress ")).collect();
    assert!(!reports.is_empty(), "no progress line: {stderr}");
    for r in &reports {
        assert!(r.contains("% slept ") || r.contains("% sleeping "), "{r}");
    }
    let done = d.wait_for_state(&uuid, &["Success"]).await;
    assert_eq!(done["progress"], 100, "{done}");
    assert_eq!(done["progress_message"], "slept 3.0s of 3.0s");
}

/// Frames until one matches `stop` (included); panics on close or silence.
async fn frames_until(ws: &mut crate::support::ws::Ws, stop: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut frames = vec![];
    loop {
        match ws_next(ws, SETTLE).await {
            WsNext::Json(f) => {
                let done = stop(&f);
                frames.push(f);
                if done {
                    return frames;
                }
            }
            other => panic!("{other:?} after {frames:?}"),
        }
    }
}

/// Removes the gate file when the test ends, however it ends.
struct GateFile(PathBuf);

impl Drop for GateFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
